"""The driver for real: `llmnas run` in a child process (local Ray, the small LLM, sandboxed
training), killed with SIGKILL mid-run and resumed; a PostgreSQL restart mid-run.

Exactly-once is checked on the archive itself: every slot of every cycle ends in a final
state, no (architecture, seed, budget) is recorded twice, every evaluated candidate has its
result, cycles are numbered without gaps, and the resumed run drew the same parents, modes
and LLM answers as an uninterrupted run with the same seed.
"""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fixtures import ROOT

from db.archive import Archive
from llmnas_dist.analysis.results import diagnose
from llmnas_dist.analysis.rundata import load_run_data
from llmnas_dist.seeds import load_seeds
from llmnas_dist.vocab import CandidateStatus, CycleStatus, RunStatus, budget_key

pytestmark = [pytest.mark.integration, pytest.mark.slow]

CYCLES = 2
TINY = {
    "ce": {"cycles": CYCLES, "candidates_per_cycle": 2, "rho": 0.25, "dataset": "digits"},
    "generation": {
        "backend": "transformers",
        "max_new_tokens": 24,
        "max_new_tokens_full": 32,
        "delta_fraction": 0.5,  # one slot of each mode per cycle
        "max_model_len": 2048,
        "warm_start": False,
        "batch_size": 2,
        "max_retries": 0,
    },
    "evaluation": {
        "epochs": 0.15,
        "evaluators": 2,
        "cpus_per_evaluator": 1.0,
        "noise_sample": 3,
        "noise_seeds": 2,
    },
    "finetune": {"epochs": 1, "max_length": 1024, "r": 8, "alpha": 8},
}
FINAL = {
    CandidateStatus.REJECTED,
    CandidateStatus.EVALUATED,
    CandidateStatus.FAILED,
}


def write_config(tmp: Path, url: str, **sections: dict) -> Path:
    """TINY with `sections` replacing whole config sections."""
    cfg = {**TINY, **sections, "archive": {"url": url}, "cluster": {"run_dir": str(tmp / "runs")}}
    path = tmp / "run.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def llmnas(*args: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "cluster.cli", *args],
        cwd=cwd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: SIGKILL takes Ray's children too
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )


def finish(proc: subprocess.Popen, timeout: float = 600) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-4000:]
    return out


def wait_for(db: Path, query: str, at_least: int, proc: subprocess.Popen, timeout: float = 300):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"driver exited early:\n{proc.stdout.read()[-4000:]}")
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5) as conn:
                    if conn.execute(query).fetchone()[0] >= at_least:
                        return
            except sqlite3.OperationalError:
                pass  # the schema is being created
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {query!r} >= {at_least}")


def kill_group(proc: subprocess.Popen) -> None:
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def assert_exactly_once(archive: Archive, run_id: str) -> None:
    run = archive.get_run(run_id)
    assert run.status is RunStatus.COMPLETED
    cycles = archive.cycles(run_id)
    assert [c.t for c in cycles] == list(range(CYCLES + 1))  # 0 = the seeds
    assert all(c.status is CycleStatus.COMPLETED and c.elites for c in cycles)
    cands = archive.candidates(run_id)
    assert all(c.status in FINAL for c in cands), [(c.id, c.status) for c in cands]
    slots = {(c.cycle, c.slot) for c in cands}
    assert {(t, s) for t, s in slots if t > 0} == {
        (t, s) for t in range(1, CYCLES + 1) for s in range(TINY["ce"]["candidates_per_cycle"])
    }
    evals = archive.evaluations(run_id)
    keys = Counter((e.arch_hash, e.dataset, e.seed, e.budget) for e in evals)
    assert max(keys.values()) == 1
    evaluated = {c.arch_hash for c in cands if c.status is CandidateStatus.EVALUATED}
    scored = {e.arch_hash for e in evals if e.score is not None}
    assert evaluated <= scored
    # every LLM answer was sampled under its grammar (generation.constrained is on by
    # default and the seeds are within the grammar's limits); seeds are not LLM answers
    assert all(c.constrained for c in cands if c.cycle > 0)
    for t in range(1, CYCLES + 1):  # the mode quota: delta_fraction 0.5 of 2 slots
        first = [c.mode.value for c in cands if c.cycle == t and c.attempt == 0]
        assert sorted(first) == ["delta", "full"]
    assert all(c.constrained is None for c in cands if c.cycle == 0)


def stream(archive: Archive, run_id: str) -> dict:
    """What the random stream decided: per (cycle, slot, attempt) parent, mode, answer."""
    return {
        (c.cycle, c.slot, c.attempt): (c.parent_hash, c.mode, c.raw_output)
        for c in archive.candidates(run_id)
    }


def test_sigkilled_driver_resumes_exactly_once_with_the_same_stream(tmp_path: Path) -> None:
    ref_dir, dir_ = tmp_path / "reference", tmp_path / "killed"
    ref_dir.mkdir()
    dir_.mkdir()
    cfg = write_config(dir_, f"sqlite:///{dir_ / 'a.db'}")  # no ce.seed: drawn

    # killed while the seeds are being evaluated (evaluations in flight), then resumed
    proc = llmnas("run", "--config", str(cfg), "--run-id", "r1", cwd=dir_)
    wait_for(dir_ / "a.db", "SELECT COUNT(*) FROM evaluations", 3, proc)
    kill_group(proc)
    with Archive.from_url(f"sqlite:///{dir_ / 'a.db'}") as archive:
        assert archive.get_run("r1").status is RunStatus.RUNNING  # nobody marked it
        assert archive.last_completed_cycle("r1") is None
        drawn = archive.get_run("r1").config["ce"]["seed"]  # drawn when the run was created
    assert isinstance(drawn, int)
    out = finish(llmnas("run", "--resume", "r1", "--config", str(cfg), cwd=dir_))
    assert "cycle  generated" in out  # the per-cycle table

    # the uninterrupted reference run with the drawn seed set (so the resume must have kept
    # the stored one to match it), scaled from 2 to 3 evaluators while it runs
    ref_cfg = write_config(
        ref_dir, f"sqlite:///{ref_dir / 'a.db'}", ce={**TINY["ce"], "seed": drawn}
    )
    proc = llmnas("run", "--config", str(ref_cfg), "--run-id", "r1", cwd=ref_dir)
    wait_for(ref_dir / "a.db", "SELECT COUNT(*) FROM cycles", 1, proc)
    scaled = llmnas("scale", "r1", "3", "--config", str(ref_cfg), cwd=ref_dir)
    assert "3 evaluators requested" in finish(scaled, timeout=120)
    finish(proc)

    with Archive.from_url(f"sqlite:///{dir_ / 'a.db'}") as killed:
        assert_exactly_once(killed, "r1")
        resumed = stream(killed, "r1")
    with Archive.from_url(f"sqlite:///{ref_dir / 'a.db'}") as ref:
        assert_exactly_once(ref, "r1")
        assert stream(ref, "r1") == resumed
        cycles = ref.cycles("r1")
        assert (cycles[0].n_evaluators, cycles[-1].n_evaluators) == (2, 3)
        results = diagnose(load_run_data(ref, "r1"))
    # the diagnostics of a real run: the noise study ran on 3 architectures, 2 seeds each,
    # and the reliability gate of cycle 1 saw exactly that
    assert len(results) == 6
    assert results["proxy_reliability"].samples["noise_archs"] == 3
    assert cycles[1].settings["gate"]["n_archs"] == 3
    report = subprocess.run(
        [sys.executable, "-m", "cluster.cli", "report", "r1", "--out", str(tmp_path / "rep")]
        + ["--config", str(ref_cfg)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert report.returncode == 0, report.stderr
    assert (tmp_path / "rep" / "r1.html").stat().st_size > 1000


def test_resubmitting_the_same_run_id_continues_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, f"sqlite:///{tmp_path / 'a.db'}")
    proc = llmnas("run", "--config", str(cfg), "--run-id", "job-1", cwd=tmp_path)
    # killed once cycle 1 has started: the seeds' cycle 0 is complete
    wait_for(tmp_path / "a.db", "SELECT COUNT(*) FROM cycles WHERE t = 1", 1, proc)
    kill_group(proc)
    out = finish(llmnas("run", "--config", str(cfg), "--run-id", "job-1", cwd=tmp_path))
    assert "run job-1" in out
    with Archive.from_url(f"sqlite:///{tmp_path / 'a.db'}") as archive:
        assert_exactly_once(archive, "job-1")
        assert [r.id for r in archive.list_runs()] == ["job-1"]
    # a completed run is not started over
    again = llmnas("run", "--config", str(cfg), "--run-id", "job-1", cwd=tmp_path)
    out, _ = again.communicate(timeout=120)
    assert again.returncode == 2 and "already completed" in out


def test_a_new_run_reuses_what_an_earlier_run_trained_under_the_same_recipe(
    tmp_path: Path,
) -> None:
    """evaluation.reuse: a second run on the archive takes the seed programs' results of
    the first (same programs, dataset, budget, seed, recipe) instead of training them, the
    noise study's second seeds included (cycle 0 draws one sample in every run)."""
    url = f"sqlite:///{tmp_path / 'a.db'}"
    cfg = write_config(tmp_path, url, ce={**TINY["ce"], "cycles": 1})
    finish(llmnas("run", "--config", str(cfg), "--run-id", "first", cwd=tmp_path))
    second_run = llmnas("run", "--config", str(cfg), "--run-id", "second", cwd=tmp_path)
    query = "SELECT COUNT(*) FROM cycles WHERE run_id = 'second' AND t = 1"
    wait_for(tmp_path / "a.db", query, 1, second_run)
    # `kill` (and `ray job stop`) stops it as Ctrl-C does: marked stopped, no stack dump
    second_run.send_signal(signal.SIGTERM)
    out, _ = second_run.communicate(timeout=300)
    assert second_run.returncode == 1 and "stopped; resume with" in out, out[-4000:]
    assert "SIGTERM received" not in out
    with Archive.from_url(url) as archive:
        first = {e.id: e for e in archive.evaluations("first")}
        seeds = {c.id for c in archive.candidates("second", cycle=0)}
        second = archive.evaluations("second")
        first_seeds = {c.id for c in archive.candidates("first", cycle=0)}
        assert archive.get_run("second").status is RunStatus.STOPPED
    cycle0 = [e for e in second if e.candidate_id in seeds]
    assert len(seeds) == len(load_seeds())
    assert len(cycle0) == sum(e.candidate_id in first_seeds for e in first.values())
    assert len({e.seed for e in cycle0}) == TINY["evaluation"]["noise_seeds"]
    assert all(e.reused_from is not None for e in cycle0)
    for copy in (e for e in second if e.reused_from is not None):
        original = first[copy.reused_from]
        assert (copy.arch_hash, copy.seed, copy.budget, copy.score, copy.recipe) == (
            original.arch_hash,
            original.seed,
            original.budget,
            original.score,
            original.recipe,
        )
        assert copy.duration_s is None and original.duration_s is not None
    assert "evaluations reused" in out  # the live line says so


def test_raise_budget_gate_reranks_the_run_at_the_raised_budget(tmp_path: Path) -> None:
    """A gate that always finds the proxy too noisy, with action raise_budget: cycle 1 runs
    at twice cycle 0's epochs, E_0 is re-evaluated at the new budget, and E_1 is ranked
    only by scores at it (a score at another budget is not comparable)."""
    epochs = TINY["evaluation"]["epochs"]
    cfg = write_config(
        tmp_path,
        f"sqlite:///{tmp_path / 'a.db'}",
        ce={**TINY["ce"], "cycles": 1},
        reliability={"snr_threshold": 1e9, "action": "raise_budget", "budget_factor": 2.0},
    )
    out = finish(llmnas("run", "--config", str(cfg), "--run-id", "gate", cwd=tmp_path))
    old, new = budget_key(epochs, None), budget_key(epochs * 2, None)
    assert f"proxy budget is now {new}" in out
    with Archive.from_url(f"sqlite:///{tmp_path / 'a.db'}") as archive:
        run = archive.get_run("gate")
        assert run.status is RunStatus.COMPLETED and run.budget == new
        c0, c1 = archive.cycles("gate")
        assert c1.settings["gate"]["low"] is True
        assert (c0.settings["budget"], c1.settings["budget"]) == (old, new)
        evals = archive.evaluations("gate")
    keys = Counter((e.arch_hash, e.dataset, e.seed, e.budget) for e in evals)
    assert max(keys.values()) == 1
    at_new = {e.arch_hash: e.score for e in evals if e.budget == new and e.score is not None}
    # E_0 (ranked at the old budget) was re-evaluated at the new one
    assert {e["hash"] for e in c0.elites} <= set(at_new)
    # E_1 holds only architectures scored at the new budget, with their new scores
    assert c1.elites and all(e["score"] == pytest.approx(at_new[e["hash"]]) for e in c1.elites)
    assert max(e["score"] for e in c1.elites) == pytest.approx(max(at_new.values()))


def pg_cluster() -> list[str]:
    """(version, name) of the local PostgreSQL cluster, for pg_ctlcluster."""
    lines = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True).stdout
    return lines.split()[:2]


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database on the local server; made and dropped with connections of its own,
    because the restart kills every connection the test suite holds."""
    from fixtures import PG_ADMIN_URL
    from sqlalchemy import create_engine
    from sqlalchemy.engine import make_url

    name = f"llmnas_restart_{os.getpid()}"
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except Exception as exc:  # noqa: BLE001
        if os.environ.get("CI"):
            pytest.fail(f"PostgreSQL not reachable: {exc}")
        pytest.skip(f"PostgreSQL not reachable: {exc}")
    yield make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    admin.dispose()
    with create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT").connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.postgres
def test_postgres_restart_mid_run(tmp_path: Path, pg_url: str) -> None:
    ctl = shutil.which("pg_ctlcluster")
    if ctl is None or os.geteuid() != 0 or not shutil.which("pg_lsclusters"):
        if os.environ.get("CI"):
            pytest.fail("CI must be able to restart PostgreSQL (pg_ctlcluster as root)")
        pytest.skip("needs pg_ctlcluster and root to restart PostgreSQL")
    cfg = write_config(tmp_path, pg_url)
    proc = llmnas("run", "--config", str(cfg), "--run-id", "pg-1", cwd=tmp_path)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"driver exited early:\n{proc.stdout.read()[-4000:]}")
        try:
            with Archive.from_url(pg_url, connect_retries=0) as archive:
                if len(archive.evaluations("pg-1")) >= 3:
                    break
        except Exception:  # noqa: BLE001 - the run row may not exist yet
            pass
        time.sleep(0.5)
    version, name = pg_cluster()
    # down long enough that the driver's writes meet the outage, not just a restart
    subprocess.run([ctl, version, name, "stop"], check=True, timeout=120)
    time.sleep(6)
    subprocess.run([ctl, version, name, "start"], check=True, timeout=120)
    out = finish(proc)
    with Archive.from_url(pg_url) as archive:
        assert_exactly_once(archive, "pg-1")
    assert "unreachable" in out  # the driver saw the outage and waited it out
