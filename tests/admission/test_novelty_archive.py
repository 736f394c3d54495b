"""Novelty against a real SQLite archive: the index is rebuilt from stored signatures."""

from __future__ import annotations

import json
from pathlib import Path

from db.archive import Archive
from llmnas_dist.admission.novelty import minhash, signature_bytes
from llmnas_dist.cli.main import main
from llmnas_dist.config import AdmissionConfig, ArchiveConfig
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import load_seeds


def _archive_with_seed(tmp_path: Path, name: str) -> tuple[str, str]:
    url = f"sqlite:///{tmp_path / 'archive.db'}"
    canon, digest = canonicalize(load_seeds()[name], AdmissionConfig())
    archive = Archive(ArchiveConfig(url=url))
    archive.add_architecture(
        canon, signature=signature_bytes(minhash(canon)), num_perm=128, shingle_size=7
    )
    return url, digest


def _check(capsys, url: str, program: Path) -> tuple[int, dict]:
    status = main(["check", "--archive", url, "--dataset", "digits", "--json", str(program)])
    return status, json.loads(capsys.readouterr().out)


def test_exact_copy_of_archived_program_is_a_duplicate(tmp_path: Path, capsys):
    url, digest = _archive_with_seed(tmp_path, "plain_cnn")
    program = tmp_path / "copy.py"
    program.write_text("# a comment the canonical form drops\n" + load_seeds()["plain_cnn"])
    status, verdict = _check(capsys, url, program)
    assert status == 1
    assert verdict["error_class"] == "duplicate"
    assert verdict["nearest_hash"] == digest


def test_near_copy_is_not_novel_and_names_its_neighbour(tmp_path: Path, capsys):
    url, digest = _archive_with_seed(tmp_path, "plain_cnn")
    code = load_seeds()["plain_cnn"]
    assert "inplace=True" in code
    program = tmp_path / "near.py"
    program.write_text(code.replace("inplace=True", "inplace=False", 1))
    status, verdict = _check(capsys, url, program)
    assert status == 1
    assert verdict["error_class"] == "not_novel"
    assert verdict["nearest_hash"] == digest
    assert 0.9 <= verdict["nearest_jaccard"] < 1.0


def test_different_architecture_is_admitted_against_the_archive(tmp_path: Path, capsys):
    url, _ = _archive_with_seed(tmp_path, "plain_cnn")
    program = tmp_path / "vgg.py"
    program.write_text(load_seeds()["vgg_small"])
    status, verdict = _check(capsys, url, program)
    assert status == 0 and verdict["admitted"] is True
    assert verdict["archive"].startswith(url)
