"""A folder of programs as the seed population: loading, sampling, `llmnas seeds check`."""

from __future__ import annotations

import json

import pytest

from llmnas_dist.cli.common import EXIT_FAILED, EXIT_OK, EXIT_USAGE
from llmnas_dist.cli.main import main
from llmnas_dist.config import CEConfig
from llmnas_dist.errors import UsageError
from llmnas_dist.seeds import load_seeds, sample_seeds, seed_population

SEEDS = load_seeds()


@pytest.fixture
def folder(tmp_path, monkeypatch):
    """Two good programs, a reformatted copy of one, and one that imports subprocess."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("LLMNAS_ARCHIVE_URL", raising=False)
    seeds = tmp_path / "programs"
    seeds.mkdir()
    (seeds / "a_cnn.py").write_text(SEEDS["plain_cnn"])
    (seeds / "b_vgg.py").write_text(SEEDS["vgg_small"])
    (seeds / "c_copy.py").write_text("# the same program\n" + SEEDS["plain_cnn"])
    (seeds / "d_os.py").write_text("import subprocess\n" + SEEDS["plain_cnn"])
    (seeds / "__init__.py").write_text("")
    (seeds / "notes.txt").write_text("not a program")
    return seeds


def test_load_folder_glob_and_shipped(folder) -> None:
    assert list(load_seeds(str(folder))) == ["a_cnn", "b_vgg", "c_copy", "d_os"]
    assert list(load_seeds(str(folder / "[ab]_*.py"))) == ["a_cnn", "b_vgg"]
    assert load_seeds(None) == SEEDS and len(SEEDS) == 15
    with pytest.raises(UsageError, match="no seed programs"):
        load_seeds(str(folder / "missing"))


def test_sample_is_bounded_and_seeded() -> None:
    many = {f"p{i:04d}": "x = 1\n" for i in range(1000)}
    a, b = sample_seeds(many, 20, seed=3), sample_seeds(many, 20, seed=3)
    assert len(a) == 20 and a == b
    assert sample_seeds(many, 20, seed=4) != a
    assert sample_seeds(many, None, seed=0) is many
    assert seed_population(CEConfig(seed_sample=4)) == sample_seeds(SEEDS, 4, 0)


def test_seeds_check_table(folder, capsys) -> None:
    assert main(["seeds", "check", str(folder), "--jobs", "2"]) == EXIT_OK
    captured = capsys.readouterr()
    lines = {line.split()[0]: line for line in captured.out.splitlines() if line.strip()}
    assert "admitted" in lines["a_cnn"] and "admitted" in lines["b_vgg"]
    assert "duplicate" in lines["c_copy"] and "a_cnn" in lines["c_copy"]
    assert "forbidden_import" in lines["d_os"] and "processes" in lines["d_os"]
    assert "2 of 4 admitted at mnist5k 1x8x8" in captured.out
    assert "checked 4/4" in captured.err  # the progress line


def test_seeds_check_json_at_a_resized_shape(folder, capsys) -> None:
    status = main(["seeds", "check", str(folder / "a_*.py"), "--input-size", "32", "--json"])
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert status == EXIT_OK and [r["name"] for r in rows] == ["a_cnn"]
    assert rows[0]["admitted"] is True and rows[0]["params"] > 0


def test_seeds_check_exit_statuses(folder, capsys) -> None:
    assert main(["seeds", "check", str(folder / "d_os.py")]) == EXIT_FAILED
    assert main(["seeds", "check", str(folder / "none_*.py")]) == EXIT_USAGE
    assert main(["seeds", "check", str(folder), "--input-size", "2"]) == EXIT_USAGE
    assert "--input-size" in capsys.readouterr().err


@pytest.mark.slow
def test_a_folder_of_a_thousand_programs_is_checked_with_progress(tmp_path, capsys) -> None:
    """1,000 distinct programs (the shipped CNN with 1,000 default dropouts, one in ten
    importing subprocess): every one gets a verdict, the progress line counts them, the
    reasons are right."""
    base = SEEDS["plain_cnn"]
    assert '"dropout", 0.1)' in base
    folder = tmp_path / "many"
    folder.mkdir()
    for i in range(1000):
        code = base.replace('"dropout", 0.1)', f'"dropout", {i / 10_000})')
        (folder / f"p{i:04d}.py").write_text(("import subprocess\n" if i % 10 == 0 else "") + code)
    assert main(["seeds", "check", str(folder), "--json"]) == EXIT_OK
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in captured.out.splitlines()]
    assert len(rows) == 1000 and "checked 1000/1000" in captured.err
    rejected = {r["name"] for r in rows if not r["admitted"]}
    assert rejected == {f"p{i:04d}" for i in range(0, 1000, 10)}
    assert {r["reason"] for r in rows if not r["admitted"]} == {"forbidden_import"}
