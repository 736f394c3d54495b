"""Behaviour of the archive and `llmnas archive`, on SQLite and PostgreSQL (fixture params)."""

from __future__ import annotations

import csv
import io
import json
import math
import random
from pathlib import Path

import datasketch
import numpy as np
import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from db.archive import Archive, candidate_id
from db.errors import (
    AlreadyExists,
    AmbiguousPrefix,
    IllegalTransition,
    NotFound,
    SchemaMismatch,
)
from db.models import Base
from db.readonly_sql import vet_select
from db.views import VIEWS, include_object
from llmnas_dist.cli.main import main
from llmnas_dist.config import ArchiveConfig, Config
from llmnas_dist.errors import ErrorClass, UsageError
from llmnas_dist.spans import Span
from llmnas_dist.vocab import CandidateStatus, RunStatus, budget_key, code_hash

BUDGET = budget_key(epochs=1.0)


def program(i: int) -> str:
    return f"class Net:\n    width = {i}\n"


def populate(archive: Archive, run: str, scores: dict[int, list[float]]) -> dict[int, str]:
    """One architecture per key, admitted in cycle key % 3, evaluated once per score."""
    archive.create_run(run_id=run, dataset="digits", budget=BUDGET)
    hashes = {}
    for i, seed_scores in scores.items():
        code = program(i)
        archive.add_architecture(code, param_count=1000 + i, run_id=run)
        hashes[i] = h = code_hash(code)
        cid = archive.add_candidate(
            run, i % 3, i, mode="delta", arch_hash=h, status=CandidateStatus.EVALUATED
        )
        for seed, score in enumerate(seed_scores):
            archive.record_evaluation(
                run, h, dataset="digits", seed=seed, budget=BUDGET, score=score, candidate_id=cid
            )
    return hashes


def reference_elites(scores: dict[str, list[float]], rho: float, min_elites: int):
    """The elite rule in plain Python: mean over seeds, sort, take max(ceil(rho N), m)."""
    means = {h: sum(v) / len(v) for h, v in scores.items() if v}
    order = sorted(means, key=lambda h: (-means[h], h))
    k = min(len(order), max(math.ceil(rho * len(order)), min_elites))
    return [(h, means[h]) for h in order[:k]]


# ---- schema -------------------------------------------------------------------------------


def test_new_database_is_migrated_to_head_with_no_autogenerate_diff(empty_db_url: str) -> None:
    archive = Archive.from_url(empty_db_url)
    try:
        assert archive.current_revision() == archive.head_revision() is not None
        with archive.engine.connect() as conn:
            ctx = MigrationContext.configure(
                conn, opts={"include_object": include_object, "compare_type": True}
            )
            assert compare_metadata(ctx, Base.metadata) == []
            assert set(VIEWS) <= set(inspect(conn).get_view_names())
    finally:
        archive.close()


def test_database_from_newer_version_or_empty_read_only_is_refused(empty_db_url: str) -> None:
    with pytest.raises(SchemaMismatch, match="empty"):
        if empty_db_url.startswith("sqlite"):
            Path(empty_db_url.removeprefix("sqlite:///")).touch()
        Archive.from_url(empty_db_url, read_only=True)
    archive = Archive.from_url(empty_db_url)
    with archive.engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = 'f00dfeed'"))
    archive.close()
    with pytest.raises(SchemaMismatch, match="newer"):
        Archive.from_url(empty_db_url)


# ---- writes -------------------------------------------------------------------------------


def test_writes_are_idempotent(archive: Archive) -> None:
    archive.create_run(run_id="r1", dataset="digits", budget=BUDGET)
    with pytest.raises(AlreadyExists):
        archive.create_run(run_id="r1")
    assert archive.add_architecture(program(1), run_id="r1") is True
    assert archive.add_architecture(program(1), run_id="r1") is False
    h = code_hash(program(1))
    archive.start_cycle("r1", 0, n_evaluators=2)
    archive.start_cycle("r1", 0)
    cid = archive.add_candidate("r1", 0, 5, mode="full", arch_hash=h, prompt="p")
    assert archive.add_candidate("r1", 0, 5, mode="full", arch_hash=h, prompt="other") == cid
    assert cid == candidate_id("r1", 0, 5)
    result = dict(dataset="digits", seed=0, budget=BUDGET)
    assert archive.record_evaluation("r1", h, **result, score=None, error_class="timeout")
    # a failed row is replaced by a later success; a success is never overwritten
    assert archive.record_evaluation("r1", h, **result, score=0.75, attempt=2)
    assert not archive.record_evaluation("r1", h, **result, score=0.75, attempt=2)
    assert not archive.record_evaluation("r1", h, **result, score=None, error_class="crashed")
    assert not archive.record_evaluation("r1", h, **result, score=0.1)
    assert archive.record_adapter("r1", 0, 1, path="a/1", base_model="m", n_examples=3)
    assert not archive.record_adapter("r1", 0, 1, path="a/1", base_model="m", n_examples=3)

    (ev,) = archive.evaluations("r1")
    assert (ev.score, ev.attempt, ev.error_class) == (0.75, 2, None)
    assert [c.prompt for c in archive.candidates("r1")] == ["p"]
    assert len(archive.cycles("r1")) == 1 and archive.cycles("r1")[0].n_evaluators == 2
    assert len(archive.adapters("r1")) == 1


def test_reusable_evaluation_is_another_runs_own_success_under_the_same_recipe(
    archive: Archive,
) -> None:
    """What evaluation.reuse may copy: a scored row of another run, trained there (not a
    copy), with the same program, dataset, budget, seed and recipe fingerprint."""
    populate(archive, "r1", {})
    archive.create_run(run_id="r2", dataset="digits", budget=BUDGET)
    h = code_hash(program(1))
    archive.add_architecture(program(1), run_id="r1")
    key = dict(dataset="digits", budget=BUDGET, recipe="aaaa")
    archive.record_evaluation("r1", h, seed=0, score=None, error_class="timeout", **key)
    archive.record_evaluation("r1", h, seed=1, score=0.5, **key)
    archive.record_evaluation("r1", h, seed=2, score=0.25, **{**key, "recipe": "bbbb"})
    (failed, trained, other_recipe) = archive.evaluations("r1")

    def found(run: str, seed: int, recipe: str = "aaaa", budget: str = BUDGET) -> int | None:
        row = archive.reusable_evaluation(run, h, "digits", budget, seed, recipe)
        return None if row is None else row.id

    assert found("r2", 0) is None  # a failure is never reused
    assert found("r2", 1) == trained.id
    assert found("r1", 1) is None  # a run never copies itself
    assert found("r2", 2) is None and found("r2", 2, "bbbb") == other_recipe.id
    assert found("r2", 1, budget=budget_key(epochs=2.0)) is None
    # a copy names its original and is never itself the one copied
    archive.record_evaluation("r2", h, seed=1, score=0.5, reused_from=trained.id, **key)
    archive.create_run(run_id="r3", dataset="digits", budget=BUDGET)
    assert found("r3", 1) == trained.id
    (copy,) = archive.evaluations("r2")
    assert (copy.reused_from, copy.recipe, copy.duration_s) == (trained.id, "aaaa", None)
    assert archive.durations("digits", BUDGET) == []  # copies and failures carry no duration


def test_bad_input_is_a_domain_error(archive: Archive) -> None:
    archive.create_run(run_id="r1")
    with pytest.raises(ValueError, match="run id"):
        archive.create_run(run_id="bad:id")
    with pytest.raises(ValueError):
        archive.add_candidate("r1", 0, 0, mode="sideways")
    with pytest.raises(ValueError):
        archive.add_architecture("x", signature=b"\0" * 10, num_perm=2)
    with pytest.raises(ValueError, match="finite"):
        archive.record_evaluation(
            "r1", "0" * 64, dataset="d", seed=0, budget=BUDGET, score=float("nan")
        )
    with pytest.raises(NotFound):
        archive.get_run("nope")
    with pytest.raises(NotFound):
        archive.start_cycle("nope", 0)


def test_signatures_round_trip_in_batches(archive: Archive) -> None:
    expected = {}
    for i in range(7):
        mh = datasketch.MinHash(num_perm=32, seed=3, scheme="affine32")
        for tok in program(i).split():
            mh.update(tok.encode())
        archive.add_architecture(program(i), signature=mh, shingle_size=7)
        expected[code_hash(program(i))] = mh
    archive.add_architecture("unsigned program")
    got = list(archive.iter_signatures(batch_size=3))
    assert [h for h, _, _ in got] == sorted(expected)
    for h, num_perm, raw in got:
        values = np.frombuffer(raw, expected[h].hashvalues.dtype)
        restored = datasketch.MinHash(num_perm, seed=3, hashvalues=values, scheme="affine32")
        assert restored == expected[h] and num_perm == 32
    arch = archive.get_architecture(got[0][0])
    assert (arch.seed, arch.scheme, arch.shingle_size) == (3, "affine32", 7)


# ---- state machines -----------------------------------------------------------------------


def test_candidate_status_follows_the_state_machine(archive: Archive) -> None:
    archive.create_run(run_id="r1")
    cid = archive.add_candidate("r1", 1, 0, mode="delta")
    for status in ("admitted", "evaluating", "admitted", "evaluating", "evaluated"):
        assert archive.update_candidate_status(cid, status) is True
    assert archive.update_candidate_status(cid, "evaluated") is False  # repeat: no-op
    with pytest.raises(IllegalTransition, match="'evaluated' to 'admitted'"):
        archive.update_candidate_status(cid, "admitted")
    rejected = archive.add_candidate("r1", 1, 1, mode="delta")
    archive.update_candidate_status(
        rejected, "rejected", error_class=ErrorClass.NOT_NOVEL, nearest_jaccard=0.95
    )
    cand = archive.get_candidate(rejected)
    assert (cand.status, cand.error_class, cand.nearest_jaccard) == ("rejected", "not_novel", 0.95)
    with pytest.raises(IllegalTransition):
        archive.update_candidate_status(rejected, "evaluating")
    with pytest.raises(ValueError):
        archive.update_candidate_status(rejected, "rejected", error_class="no_such_class")
    with pytest.raises(NotFound):
        archive.update_candidate_status("r1:9:9:9", "admitted")
    fuzzed = archive.add_candidate("r1", 1, 2, mode="delta")
    note = "hunk 1: placed at line 7, the first of 2 matches"
    h = archive.admit_candidate(fuzzed, program(2), message=note)
    cand = archive.get_candidate(fuzzed)
    assert (cand.status, cand.arch_hash, cand.message) == ("admitted", h, note)


def test_run_and_cycle_status(archive: Archive) -> None:
    archive.create_run(run_id="r1")
    archive.start_cycle("r1", 0)
    archive.start_cycle("r1", 1)
    assert archive.last_completed_cycle("r1") is None
    archive.complete_cycle("r1", 0, gamma_t=0.5, n_elites=2)
    archive.complete_cycle("r1", 0, gamma_t=0.9)  # repeat: no-op
    assert archive.last_completed_cycle("r1") == 0
    assert archive.cycles("r1")[0].gamma_t == 0.5
    assert archive.finish_run("r1", "stopped").status is RunStatus.STOPPED
    assert archive.finish_run("r1", "running").finished_at is None  # resumed
    archive.finish_run("r1")
    with pytest.raises(IllegalTransition):
        archive.finish_run("r1", "running")


def test_a_new_run_stores_a_drawn_stream_seed_and_keeps_a_set_one(
    archive: Archive, capsys: pytest.CaptureFixture[str]
) -> None:
    drawn = [archive.create_run(Config(), run_id=f"d{i}").config["ce"]["seed"] for i in range(3)]
    assert all(isinstance(s, int) and s >= 0 for s in drawn)
    assert len(set(drawn)) == 3  # fresh streams per run (a repeat once replayed the first)
    assert archive.get_run("d0").config["ce"]["seed"] == drawn[0]  # what a resume reads back
    set_seed = Config.model_validate({"ce": {"seed": 11}})
    assert archive.create_run(set_seed, run_id="s").config["ce"]["seed"] == 11
    code, out, _ = cli(capsys, archive, "runs", "--json")  # where a user finds it to replay
    assert code == 0
    assert {r["id"]: r["seed"] for r in json.loads(out)} == {
        "d0": drawn[0],
        "d1": drawn[1],
        "d2": drawn[2],
        "s": 11,
    }


# ---- selection ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 1])
def test_elites_match_a_python_reference_with_ties(archive: Archive, seed: int) -> None:
    rng = random.Random(seed)
    # scores on a coarse dyadic grid: many exact ties, sums exact in any order
    scores = {i: [rng.randint(0, 8) / 8 for _ in range(rng.randint(1, 3))] for i in range(60)}
    hashes = populate(archive, "r1", scores)
    other = archive.create_run(run_id="r2", dataset="digits", budget=BUDGET)
    archive.record_evaluation(other.id, hashes[0], dataset="digits", seed=0, budget=BUDGET, score=9)
    archive.record_evaluation("r1", hashes[1], dataset="digits", seed=0, budget="epochs=5", score=9)
    archive.record_evaluation("r1", hashes[2], dataset="digits", seed=9, budget=BUDGET, score=None)
    by_hash = {hashes[i]: v for i, v in scores.items()}
    for rho, min_elites in [(0.25, 1), (0.1, 2), (0.5, 40), (0.07, 1), (1.0, 1)]:
        gamma, elites = archive.elites("r1", rho, min_elites=min_elites)
        expected = reference_elites(by_hash, rho, min_elites)
        assert [(e.hash, e.score) for e in elites] == expected
        assert gamma == expected[-1][1]
        assert [e.rank for e in elites] == list(range(1, len(elites) + 1))
        assert all(
            e.code == program(next(i for i in hashes if hashes[i] == e.hash)) for e in elites
        )
    top = archive.top("r1", 5)
    assert [(r.hash, r.score) for r in top] == reference_elites(by_hash, 5 / 60, 1)
    assert top[0].params == 1000 + next(i for i in hashes if hashes[i] == top[0].hash)
    view = archive.sql(
        f"SELECT hash, mean_score, first_cycle FROM v_leaderboard WHERE run_id = 'r1' "
        f"AND budget = '{BUDGET}' ORDER BY rank LIMIT 5"
    )
    assert view.rows == [(r.hash, r.score, r.first_cycle) for r in top]
    assert archive.elites("r1", 0.25, dataset="cifar10") == (None, [])
    with pytest.raises(ValueError):
        archive.elites("r1", 0.0)


# ---- reports ------------------------------------------------------------------------------


def test_lineage_walks_admitted_parents(archive: Archive) -> None:
    archive.create_run(run_id="r1")
    chain = [code_hash(program(i)) for i in range(3)]
    for i in range(3):
        archive.add_architecture(program(i))
        archive.add_candidate(
            "r1", i, 0, mode="delta" if i else "full", arch_hash=chain[i],
            parent_hash=chain[i - 1] if i else None, status="admitted",
        )  # fmt: skip
    # a rejected duplicate of program 2 with another parent must not bend the chain
    archive.add_candidate(
        "r1", 2, 1, mode="delta", arch_hash=chain[2], parent_hash=chain[2], status="rejected"
    )
    steps = archive.lineage(chain[2])
    assert [s.hash for s in steps] == chain[::-1]
    assert [s.parent_hash for s in steps] == [chain[1], chain[0], None]
    assert [s.cycle for s in steps] == [2, 1, 0]
    with pytest.raises(NotFound):
        archive.lineage("0" * 64)


def test_failures_and_cycle_stats(archive: Archive) -> None:
    archive.create_run(run_id="r1")
    archive.create_run(run_id="r2")
    reasons = ["not_novel", "syntax_error", "not_novel", "timeout", None, "not_novel"]
    constrained = [True, False, True, None, True, False]
    for slot, (reason, con) in enumerate(zip(reasons, constrained, strict=True)):
        status = "evaluated" if reason is None else "failed" if reason == "timeout" else "rejected"
        archive.add_candidate(
            "r1", 0, slot, mode="delta", status=status, error_class=reason, constrained=con
        )
    archive.add_candidate("r2", 0, 0, mode="delta", status="rejected", error_class="no_delta")
    assert archive.failures("r1") == [
        ("not_novel", True, 2), ("not_novel", False, 1), ("syntax_error", False, 1),
        ("timeout", None, 1),
    ]  # fmt: skip
    (stats,) = archive.cycle_stats("r1")
    keys = ("generated", "constrained", "rejected", "admitted", "evaluated", "failed")
    assert {k: stats[k] for k in keys} == {
        "generated": 6, "constrained": 3, "rejected": 4, "admitted": 1, "evaluated": 1,
        "failed": 1,
    }  # fmt: skip


@pytest.mark.parametrize(("given", "tries"), [(None, 3), (0, 1)])
def test_connect_retries_given_at_open_bound_every_query(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, given: int | None, tries: int
) -> None:
    """The CLI opens the archive with connect_retries=0: an outage mid-command fails at once
    (before, only the first connection honoured it and later queries retried 30 times)."""
    from sqlalchemy.exc import OperationalError

    url = f"sqlite:///{tmp_path / 'a.db'}"
    Archive.from_url(url).close()  # created and migrated
    calls = []

    def unreachable(*args: object, **kwargs: object) -> None:
        calls.append(1)
        raise OperationalError("SELECT 1", {}, Exception("connection refused"))

    monkeypatch.setattr("db.engine.time.sleep", lambda s: None)
    cfg = ArchiveConfig(url=url, connect_retries=2)
    with Archive(cfg, read_only=True, connect_retries=given) as archive:
        monkeypatch.setattr(archive, "_session", unreachable)
        with pytest.raises(OperationalError):
            archive.list_runs()
    assert len(calls) == tries


def test_every_method_that_touches_the_database_reconnects() -> None:
    """@reconnecting (db/engine.py) is on every public query and write; the two that cannot
    carry it themselves retry each step: iter_signatures (a generator) per batch, sql per
    statement (so a query's own failure is never repeated)."""
    not_database = {"close", "from_url", "head_revision", "upgrade"}
    per_step = {"iter_signatures": "_signatures_after", "sql": "_select"}
    missing = [
        name
        for name in dir(Archive)
        if not name.startswith("_")
        and callable(getattr(Archive, name))
        and name not in not_database
        and not hasattr(getattr(Archive, per_step.get(name, name)), "__wrapped__")
    ]
    assert missing == []


def test_hash_prefix_lookup(archive: Archive) -> None:
    codes = [program(i) for i in range(40)]
    for c in codes:
        archive.add_architecture(c)
    hashes = sorted(code_hash(c) for c in codes)
    assert archive.find_architecture(hashes[0][:12].upper()).hash == hashes[0]
    shared = next(a[:1] for a, b in zip(hashes, hashes[1:], strict=False) if a[0] == b[0])
    with pytest.raises(AmbiguousPrefix):
        archive.find_architecture(shared)
    with pytest.raises(NotFound):
        archive.find_architecture("zz")
    missing = next(
        p for p in (f"{i:03x}" for i in range(4096)) if not any(h.startswith(p) for h in hashes)
    )
    with pytest.raises(NotFound):
        archive.find_architecture(missing)


# ---- read-only SQL ------------------------------------------------------------------------


def test_sql_is_read_only(archive: Archive) -> None:
    populate(archive, "r1", {i: [i / 10] for i in range(5)})
    result = archive.sql("SELECT run_id, COUNT(*) AS n FROM evaluations GROUP BY run_id;")
    assert result.columns == ["run_id", "n"] and result.rows == [("r1", 5)]
    assert archive.sql("SELECT hash FROM architectures", max_rows=2).truncated is True
    smuggled = {
        "sqlite": "WITH x AS (SELECT 1) DELETE FROM evaluations",
        "postgresql": "WITH x AS (DELETE FROM evaluations RETURNING 1) SELECT * FROM x",
    }[archive.dialect]
    for bad in (
        "DELETE FROM evaluations",
        "SELECT 1; DELETE FROM evaluations",
        "select 1 /* ; */ ; drop table runs",
        smuggled,
        "SELECT nope FROM nowhere",
    ):
        with pytest.raises(UsageError):
            archive.sql(bad)
    assert archive.sql("SELECT COUNT(*) FROM evaluations").rows == [(5,)]


def test_vet_select_ignores_semicolons_in_literals_and_comments() -> None:
    assert vet_select("SELECT ';' AS s -- x;\n;") == "SELECT ';' AS s -- x;\n"
    assert vet_select('(SELECT "a;b" FROM t)') == '(SELECT "a;b" FROM t)'
    for bad in ("", "-- only a comment", "PRAGMA journal_mode=DELETE", "SELECT 'open"):
        with pytest.raises(UsageError):
            vet_select(bad)


# ---- the CLI ------------------------------------------------------------------------------


def cli(capsys: pytest.CaptureFixture[str], archive: Archive, *argv: str) -> tuple[int, str, str]:
    code = main(["archive", *argv, "--archive", archive.cfg.url])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_queries_as_tables_and_json(archive: Archive, capsys, tmp_path: Path) -> None:
    hashes = populate(archive, "r1", {i: [i / 10, i / 10 + 0.05] for i in range(6)})
    best = hashes[5]
    archive.add_candidate("r1", 3, 99, mode="delta", status="rejected", error_class="not_novel")

    code, out, _ = cli(capsys, archive, "runs")
    assert code == 0 and "r1" in out and "running" in out
    code, out, _ = cli(capsys, archive, "top", "--run", "r1", "--k", "3")
    lines = out.splitlines()
    assert code == 0 and lines[0].split() == [
        "rank",
        "hash",
        "score",
        "n_seeds",
        "params",
        "first_cycle",
    ]
    assert lines[2].split()[:3] == ["1", best[:12], "0.5250"]
    code, out, _ = cli(capsys, archive, "top", "--run", "r1", "--k", "2", "--json")
    assert [r["hash"] for r in json.loads(out)] == [best, hashes[4]]
    code, out, _ = cli(capsys, archive, "show", best[:10], "--json")
    shown = json.loads(out)
    assert shown["hash"] == best and shown["code"] == program(5) and len(shown["evaluations"]) == 2
    assert [e["reused_from"] for e in shown["evaluations"]] == [None, None]  # trained here
    code, out, _ = cli(capsys, archive, "show", best[:10])
    assert code == 0 and program(5).strip() in out
    code, out, _ = cli(capsys, archive, "lineage", best, "--json")
    assert json.loads(out)[0]["hash"] == best
    code, out, _ = cli(capsys, archive, "failures", "--run", "r1", "--json")
    assert json.loads(out) == [{"error_class": "not_novel", "decoding": "unrecorded", "count": 1}]
    code, out, _ = cli(capsys, archive, "sql", "SELECT COUNT(*) AS n FROM v_leaderboard", "--json")
    assert json.loads(out) == {"columns": ["n"], "rows": [[6]], "truncated": False}


def cycle_spans(t: int, start: float) -> list[Span]:
    """A 50 s cycle: generator 40 s, driver 3 s, e1 10 s of a pool of 3, fine-tuner 7 s:
    shares gen 80%, eval 10/50/3 = 7%, ft 14%, drv 6%."""

    def s(kind: str, actor: str, a: float, b: float) -> Span:
        return Span(kind, actor, start + a, start + b, cycle=t)

    return [
        s("generate", "g", 0, 40),
        *(s("admit", "driver", a, a + 1) for a in (10, 20, 40)),
        *(s("evaluate", "e1", a, b) for a, b in ((11, 15), (21, 25), (41, 43))),
        s("finetune", "f", 43, 50),
    ]


def test_cli_runs_shows_the_last_completed_cycles_busy_shares(archive: Archive, capsys) -> None:
    archive.create_run(run_id="r1", dataset="digits", budget=BUDGET)
    archive.create_run(run_id="r0", dataset="digits", budget=BUDGET)  # no spans: "-"
    archive.start_cycle("r0", 1, 2)
    archive.complete_cycle("r0", 1)
    archive.start_cycle("r1", 1, 3)
    archive.record_spans("r1", cycle_spans(1, 1_700_000_000.0))
    archive.complete_cycle("r1", 1)
    # cycle 2 still runs, all generation so far: it must not be the one shown
    archive.start_cycle("r1", 2, 3)
    archive.record_spans("r1", [Span("generate", "g", 1_700_001_000.0, 1_700_001_010.0, cycle=2)])

    code, out, _ = cli(capsys, archive, "runs")
    lines = {line.split()[0]: line for line in out.splitlines()[2:]}
    assert code == 0 and out.splitlines()[0].split()[-1] == "busy"
    assert lines["r1"].endswith("gen 80% eval 7% ft 14% drv 6%")
    assert lines["r0"].endswith(" -")
    code, out, _ = cli(capsys, archive, "runs", "--json")
    busy = {r["id"]: r["busy"] for r in json.loads(out)}
    assert busy["r0"] is None
    assert busy["r1"]["cycle"] == 1 and busy["r1"]["text"] == "gen 80% eval 7% ft 14% drv 6%"
    assert busy["r1"]["group_share"] == pytest.approx(
        {"generator": 0.8, "evaluator": round(0.2 / 3, 4), "finetuner": 0.14, "driver": 0.06}
    )


def test_cli_export_formats(archive: Archive, capsys, tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    populate(archive, "r1", {i: [i / 10] for i in range(4)})
    code, out, _ = cli(capsys, archive, "export", "--run", "r1", "--format", "csv")
    rows = list(csv.DictReader(io.StringIO(out)))
    assert code == 0 and len(rows) == 4 and sorted(float(r["score"]) for r in rows)[-1] == 0.3
    code, out, _ = cli(capsys, archive, "export", "--run", "r1", "--format", "jsonl",
                       "--table", "candidates")  # fmt: skip
    slots = [json.loads(line)["slot"] for line in out.splitlines()]
    assert slots == sorted(range(4), key=lambda i: (i % 3, i))  # (cycle, slot) order
    target = tmp_path / "lb.parquet"
    code, out, _ = cli(capsys, archive, "export", "--run", "r1", "--format", "parquet",
                       "--table", "leaderboard", "--out", str(target), "--json")  # fmt: skip
    assert json.loads(out)["rows"] == 4
    table = pq.read_table(target)
    assert table.num_rows == 4 and table.column("rank").to_pylist() == [1, 2, 3, 4]


def test_cli_export_lemur_layout(archive: Archive, capsys, tmp_path: Path) -> None:
    """A run's trained programs in LEMUR's layout: nn/<name>.py and one JSON list of
    trials per (dataset, program, epoch), best first, with prm, duration in ns, uid."""
    config = {"evaluation": {"recipe": "lemur", "lr": 0.002, "batch_size": 32}}
    archive.create_run(config, run_id="r2", dataset="cifar10", budget=BUDGET)
    code = "def supported_hyperparameters():\n    return {'lr', 'dropout'}\nclass Net:\n    pass\n"
    archive.add_architecture(code, param_count=10, run_id="r2")
    h = code_hash(code)
    for seed, acc in ((0, 0.61), (1, 0.64)):
        archive.record_evaluation(
            "r2", h, dataset="cifar10", seed=seed, budget=BUDGET, score=acc, accuracy=acc,
            epochs_done=1.0, duration_s=2.5,
        )  # fmt: skip
    archive.record_evaluation("r2", h, dataset="cifar10", seed=2, budget=BUDGET, score=None,
                              error_class="timeout")  # fmt: skip
    out_dir = tmp_path / "lemur"
    status, out, _ = cli(capsys, archive, "export", "--run", "r2", "--format", "lemur",
                         "--out", str(out_dir), "--json")  # fmt: skip
    assert status == 0 and json.loads(out)["programs"] == 1
    name = f"llmnas-{h[:32]}"
    assert (out_dir / "nn" / f"{name}.py").read_text() == code
    stat = out_dir / "stat" / "train" / f"img-classification_cifar-10_acc_{name}" / "1.json"
    trials = json.loads(stat.read_text())
    assert [t["accuracy"] for t in trials] == [0.64, 0.61]  # the failed seed is not a trial
    assert trials[0]["duration"] == 2_500_000_000 and trials[0]["batch"] == 32
    assert trials[0]["dropout"] == 0.2 and trials[0]["lr"] == 0.01  # its own lr trained it
    assert "momentum" not in trials[0]  # LEMUR records the declared keys only
    assert "optimizer" not in trials[0]["llmnas_recipe"]  # recipe lemur: its own optimiser
    assert trials[0]["transform"] == "norm_32" and len({t["uid"] for t in trials}) == 2
    status, _, err = cli(capsys, archive, "export", "--run", "r2", "--format", "lemur")
    assert status == 2 and "--out DIR" in err


def test_cli_bad_input_exits_2(archive: Archive, capsys, tmp_path: Path) -> None:
    populate(archive, "r1", {0: [0.5], 1: [0.6]})
    for argv in (
        ("top", "--run", "nope"),
        ("failures", "--run", "nope"),
        ("show", "f" * 64),
        ("show", "xyz"),
        ("lineage", "0" * 64),
        ("sql", "DROP TABLE runs"),
        ("sql", "SELECT * FROM no_such_table"),
        ("export", "--run", "r1", "--format", "parquet"),
    ):
        code, out, err = cli(capsys, archive, *argv)
        assert code == 2, argv
        assert err.startswith("llmnas: error: ") and len(err.strip().splitlines()) == 1, err
    with pytest.raises(SystemExit) as exc:
        cli(capsys, archive, "top", "--run", "r1", "--k", "0")
    assert exc.value.code == 2


def test_cli_never_creates_a_database(capsys, tmp_path: Path) -> None:
    missing = tmp_path / "sub" / "none.db"
    assert main(["archive", "runs", "--archive", f"sqlite:///{missing}"]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert not missing.exists() and not missing.parent.exists()
    code = main(["archive", "runs", "--archive", "postgresql+psycopg://u@127.0.0.1:1/x"])
    assert code == 2 and "cannot open archive" in capsys.readouterr().err


def test_database_at_an_older_revision_is_upgraded_and_backfilled(empty_db_url: str) -> None:
    from alembic import command

    archive = Archive.from_url(empty_db_url)
    populate(archive, "r1", {0: [0.25, 0.75], 1: [0.125]})
    with archive.engine.begin() as conn:
        cfg = archive._alembic_config()
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0001")  # back to the first schema, evaluations kept
    archive.close()
    archive = Archive.from_url(empty_db_url)
    try:
        assert archive.current_revision() == archive.head_revision() != "0001"
        top = archive.top("r1", 5)
        assert [(r.score, r.n_seeds) for r in top] == [(0.5, 2), (0.125, 1)]
    finally:
        archive.close()
