"""`llmnas check`: verdicts, exit statuses, and no archive created by checking."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from llmnas_dist.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from llmnas_dist.cli.main import main
from llmnas_dist.config import load_config
from llmnas_dist.seeds import load_seeds

SEED = load_seeds()["plain_cnn"]
DEFAULT = load_config(None)  # the embedded default: every command without --config


@pytest.fixture
def workdir(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the default archive URL is relative: keep it in tmp
    monkeypatch.delenv("LLMNAS_ARCHIVE_URL", raising=False)
    (tmp_path / "seed.py").write_text(SEED)
    return tmp_path


def test_admitted_seed_prints_json_and_creates_no_archive(workdir, capsys):
    status = main(["check", "seed.py", "--dataset", "cifar100", "--json"])
    out = json.loads(capsys.readouterr().out)
    assert status == EXIT_OK and out["admitted"] is True
    assert out["dataset"] == "cifar100" and out["param_count"] > 0
    assert len(out["code_hash"]) == 64 and out["archive"] is None
    assert not (workdir / "runs").exists()


@pytest.mark.parametrize(
    ("flags", "shape"),
    [
        ([], "1x8x8"),  # the default's own dataset at the default's size (mnist5k at 8 px)
        (["--dataset", "cifar100"], "3x32x32"),  # another dataset keeps its own size
        (["--dataset", "cifar100", "--input-size", "16"], "3x16x16"),
        (["--dataset", DEFAULT.ce.dataset], "1x8x8"),
    ],
)
def test_the_configs_input_size_belongs_to_its_own_dataset(workdir, capsys, flags, shape):
    assert DEFAULT.evaluation.input_size == 8  # what this test is about
    assert main(["check", "seed.py", *flags]) == EXIT_OK
    assert f"({shape})" in capsys.readouterr().out


def test_rejected_program_human_output(workdir, capsys):
    (workdir / "bad.py").write_text("import socket\n" + SEED)
    assert main(["check", "bad.py"]) == EXIT_FAILED
    out = capsys.readouterr().out
    assert out.startswith("rejected: forbidden_import")
    assert "import socket" in out and f"dataset: {DEFAULT.ce.dataset}" in out


def test_parent_and_delta(workdir, capsys):
    (workdir / "d.txt").write_text("@@ -1 +1 @@\n-    return 7\n+    return 8\n")
    assert main(["check", "--parent", "seed.py", "--delta", "d.txt", "--json"]) == EXIT_FAILED
    out = json.loads(capsys.readouterr().out)
    assert out["error_class"] == "hunk_not_found" and "Nearest parent lines" in out["message"]


@pytest.mark.parametrize(
    "argv",
    [
        ["check"],
        ["check", "seed.py", "--parent", "seed.py", "--delta", "seed.py"],
        ["check", "--parent", "seed.py"],
        ["check", "missing.py"],
        ["check", "seed.py", "--dataset", "imagenet21k"],
    ],
)
def test_usage_errors(workdir, capsys, argv):
    assert main(argv) == EXIT_USAGE
    err = capsys.readouterr().err
    assert err.startswith("llmnas: error:") and len(err.splitlines()) == 1


def test_exit_status_from_a_real_process(workdir):
    (workdir / "bad.py").write_text(SEED + "\nx = eval('1')\n")
    run = subprocess.run(
        [sys.executable, "-m", "llmnas_dist.cli.main", "check", "bad.py"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=workdir,
        check=False,
    )
    assert run.returncode == EXIT_FAILED, run.stderr
    assert "forbidden_call" in run.stdout
    assert Path(workdir, "runs").exists() is False
