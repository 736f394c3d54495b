"""One process writes the archive in many small transactions while the CLI reads it."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest
from fixtures import ROOT

from db.archive import Archive

pytestmark = pytest.mark.integration

N = 200
WRITER = textwrap.dedent(
    """
    import sys, time
    from db.archive import Archive
    from llmnas_dist.vocab import code_hash
    url, n = sys.argv[1], int(sys.argv[2])
    archive = Archive.from_url(url)
    for i in range(n):
        code = f"class Net:\\n    width = {i}\\n"
        archive.add_architecture(code, param_count=i, run_id="w")
        cid = archive.add_candidate("w", i // 20, i % 20, mode="delta", arch_hash=code_hash(code))
        archive.update_candidate_status(cid, "admitted")
        archive.record_evaluation("w", code_hash(code), dataset="digits", seed=0,
                                  budget="epochs=1", score=i / n, candidate_id=cid)
        time.sleep(0.002)
    archive.close()
    """
)


def run_cli(url: str, *argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "llmnas_dist.cli.main", "archive", *argv, "--archive", url],
        capture_output=True, text=True, cwd=ROOT, timeout=120,
    )  # fmt: skip


def test_cli_reads_while_a_process_writes(empty_db_url: str) -> None:
    archive = Archive.from_url(empty_db_url)
    archive.create_run(run_id="w", dataset="digits", budget="epochs=1")
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, empty_db_url, str(N)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    reads = 0
    try:
        while writer.poll() is None or reads < 2:
            for argv in (
                ("top", "--run", "w", "--k", "3"),
                ("sql", "SELECT COUNT(*) FROM evaluations e JOIN candidates c "
                        "ON c.id = e.candidate_id"),
            ):  # fmt: skip
                done = run_cli(empty_db_url, *argv)
                assert done.returncode == 0, done.stderr
                assert "locked" not in done.stderr.lower()
                reads += 1
        _, err = writer.communicate(timeout=120)
    finally:
        if writer.poll() is None:
            writer.kill()
    assert writer.returncode == 0, err
    assert "locked" not in err.lower()
    assert reads >= 2
    count = archive.sql("SELECT COUNT(*) FROM evaluations WHERE score IS NOT NULL").rows[0][0]
    assert count == N
    assert len(archive.candidates("w", statuses=["admitted"])) == N
    gamma, elites = archive.elites("w", 0.1)
    assert len(elites) == N // 10 and gamma == elites[-1].score
    archive.close()
