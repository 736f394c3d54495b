"""bench/scaling_bench.py at tiny sizes on a real local Ray and a real SQLite archive."""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path

import pytest
from fixtures import load_bench

ray = pytest.importorskip("ray")

from db.archive import Archive  # noqa: E402
from llmnas_dist.admission.delta import apply_delta, extract_code, extract_delta  # noqa: E402
from llmnas_dist.config import GenerationConfig  # noqa: E402
from llmnas_dist.evaluation.datasets import dataset_spec  # noqa: E402
from llmnas_dist.generation.engine import GenerationResult  # noqa: E402
from llmnas_dist.generation.prompts import parent_prompt, retry_prompt  # noqa: E402
from llmnas_dist.seeds import load_seeds  # noqa: E402
from llmnas_dist.vocab import CandidateStatus, CycleStatus, RunStatus  # noqa: E402
from workers.generator import GenRequest  # noqa: E402

sb = load_bench("scaling_bench")

SIZES = [1, 2]
DURATION_S = 0.2
PER_EVALUATOR = 2
OVERHEAD_TASKS = 20


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def bench_run(local_ray):
    """The whole bench at tiny sizes; its report and the archive it wrote (kept open)."""
    with sb.temp_archive() as archive:
        report = sb.run_bench(
            archive,
            SIZES,
            DURATION_S,
            PER_EVALUATOR,
            cpus_per_evaluator=0.05,
            overhead_tasks=OVERHEAD_TASKS,
            overhead_evaluators=2,
        )
        yield report, archive


@pytest.mark.integration
def test_efficiency_rows_cover_each_size_within_bounds(bench_run) -> None:
    report, _ = bench_run
    rows = report["scaling"]
    assert [r["evaluators"] for r in rows] == SIZES
    for r in rows:
        assert r["tasks"] == r["evaluators"] * PER_EVALUATOR
        assert r["ideal_s"] == pytest.approx(PER_EVALUATOR * DURATION_S)
        assert r["makespan_s"] >= r["ideal_s"] * 0.95  # sleeps cannot finish early
        assert 0.0 < r["efficiency"] <= 1.05
        assert r["startup_s"] > 0.0 and r["mean_gap_ms"] >= 0.0
        assert r["oversleep_ms"] >= 0.0 and r["archive_ms_per_task"] > 0.0
    assert report["goals"] == {"efficiency_min": 0.95, "overhead_ms_max": 5.0}
    json.dumps(report)  # the --json output is plain JSON


@pytest.mark.integration
def test_every_task_is_recorded_exactly_once(bench_run) -> None:
    report, archive = bench_run
    runs = [(r["run_id"], r["tasks"], r["deliveries"]) for r in report["scaling"]]
    o = report["overhead"]
    runs.append((o["run_id"], o["tasks"], o["deliveries"]))
    for run_id, tasks, deliveries in runs:
        rows = archive.evaluations(run_id)
        assert deliveries == tasks  # the pool yielded one result per task
        assert len(rows) == tasks
        assert len({row.arch_hash for row in rows}) == tasks  # one row per task's architecture
        assert all(row.score is not None and row.attempt == 1 for row in rows)


@pytest.mark.integration
def test_overhead_splits_into_archive_and_pool(bench_run) -> None:
    o = bench_run[0]["overhead"]
    assert o["tasks"] == OVERHEAD_TASKS and o["recorded"] == OVERHEAD_TASKS
    assert o["total_ms"] == pytest.approx(o["archive_ms"] + o["pool_ms"])
    assert o["archive_ms"] > 0.0 and o["pool_ms"] > 0.0


@pytest.mark.integration
def test_report_prints_goals_next_to_numbers(bench_run) -> None:
    text = sb.format_report(bench_run[0])
    assert "goal >= 0.95" in text and "goal < 5.0 ms" in text
    assert text.count("| meets |") + text.count("| MISSES |") == len(SIZES) + 1


def test_bad_sizes_are_usage_errors() -> None:
    with pytest.raises(ValueError, match="comma-separated integers"):
        sb.parse_sizes("1,two")
    with pytest.raises(ValueError, match="at least 1"):
        sb.parse_sizes("0,4")
    assert sb.parse_sizes("1, 2,32") == [1, 2, 32]
    with pytest.raises(SystemExit):
        sb.parse_args(["--duration-s", "0"])


# ---- driver mode: the real driver with the named LLM fakes of bench/driver_stubs.py ----

stubs = sb.driver_stubs
DRIVER = sb.DriverSettings(
    cycles=1,
    candidates=4,
    epochs=0.1,
    seeds=("plain_cnn", "resnet_basic", "se_resnet"),  # the shortest proxies on digits
    tokens_per_s=2000.0,
    batch_size=2,
    cpus_per_evaluator=0.05,
)
FINAL = {CandidateStatus.REJECTED, CandidateStatus.EVALUATED, CandidateStatus.FAILED}


def test_stub_generation_answers_with_a_timed_mutation_of_the_parent() -> None:
    parent = load_seeds()["resnet_basic"]
    spec = dataset_spec("digits")
    engine = stubs.StubGeneration(GenerationConfig(), tokens_per_s=500.0)
    delta = parent_prompt("delta", parent, spec, 0.5)
    requests = [
        GenRequest("0:0", delta, "delta"),
        GenRequest("1:0", parent_prompt("full", parent, spec, None), "full"),
        GenRequest("2:1", retry_prompt(delta, "no", "say it as a diff"), "delta", retry=True),
    ]
    started = time.time()
    results = engine.generate(requests, seed=7, alone=False)
    assert len(results) == 3
    for req, res in zip(requests, results, strict=True):
        assert set(GenerationResult.__dataclass_fields__) <= set(res.__dataclass_fields__)
        assert res.key == req.key and res.mode == req.mode and res.stub is True
        assert started <= res.started <= res.ended and res.where == engine.where()
        child = (
            extract_code(res.text)
            if req.mode == "full"
            else apply_delta(parent, extract_delta(res.text))
        )
        assert child.strip() != parent.strip()
    # a batch decodes side by side: the call lasts its longest answer's tokens
    longest = max(r.output_tokens for r in results)
    assert results[0].seconds >= 0.95 * longest / 500.0
    again = engine.generate(requests, seed=7)
    assert [r.text for r in again] == [r.text for r in results]  # seeded


def test_stub_finetuner_keeps_the_adapter(tmp_path: Path) -> None:
    ft = stubs.StubFinetuner("smollm2-135m-instruct")
    first = ft.train([], "digits", str(tmp_path / "v001"), 1)
    assert first.adapter_dir == str(tmp_path / "v001") and first.stub is True
    assert (tmp_path / "v001" / "adapter_config.json").is_file()
    again = ft.train([], "digits", str(tmp_path / "v002"), 2, init_adapter=first.adapter_dir)
    assert again.adapter_dir == first.adapter_dir and not (tmp_path / "v002").exists()
    assert {"examples", "train_loss", "version"} <= set(again.__dataclass_fields__)


@pytest.mark.integration
@pytest.mark.slow
def test_driver_mode_runs_the_real_driver_beside_the_sleep_rows(local_ray, tmp_path) -> None:
    with sb.temp_archive() as archive:
        report = sb.run_bench(
            archive,
            SIZES,
            DURATION_S,
            PER_EVALUATOR,
            cpus_per_evaluator=0.05,
            overhead_tasks=0,
            overhead_evaluators=1,
            driver=DRIVER,
            driver_root=tmp_path,
        )
    rows = report["driver"]["rows"]
    assert [r["evaluators"] for r in rows] == SIZES
    for r in rows:
        assert r["cycles"] == DRIVER.cycles and r["tasks"] >= 1
        assert 0.0 < r["efficiency"] <= 1.05 and 0.0 < r["ready_efficiency"] <= 1.05
        assert 0.0 < r["busy_share"] <= 1.0 and r["admit_ms"] > 0.0
        with Archive.from_url(r["archive_url"]) as archive:
            run_id = r["run_id"]
            assert archive.get_run(run_id).status is RunStatus.COMPLETED
            cycles = archive.cycles(run_id)
            assert [c.t for c in cycles] == list(range(DRIVER.cycles + 1))
            assert all(c.status is CycleStatus.COMPLETED for c in cycles)
            cands = [c for c in archive.candidates(run_id) if c.cycle >= 1]
            # every candidate recorded exactly once, and finished
            assert max(Counter((c.cycle, c.slot, c.attempt) for c in cands).values()) == 1
            assert {c.slot for c in cands if c.attempt == 0} == set(range(DRIVER.candidates))
            assert all(c.status in FINAL for c in cands), [(c.id, c.status) for c in cands]
            evals = archive.evaluations(run_id)
            keys = Counter((e.arch_hash, e.dataset, e.seed, e.budget) for e in evals)
            assert max(keys.values()) == 1
            per_cand = Counter(e.candidate_id for e in evals)
            done = [c for c in cands if c.status is not CandidateStatus.REJECTED]
            assert len(done) == r["admitted"] and all(per_cand[c.id] == 1 for c in done)
            for t in range(1, DRIVER.cycles + 1):
                spans = archive.spans(run_id, t)
                kinds = Counter(s.kind for s in spans)
                assert kinds["generate"] >= 1 and kinds["admit"] >= 1 and kinds["evaluate"] >= 1
                # one admission per answer, one evaluation span per admitted candidate
                admits = Counter(s.key for s in spans if s.kind == "admit")
                assert set(admits) == {c.id for c in cands if c.cycle == t}
                assert max(admits.values()) == 1
                evaluated = [s.key for s in spans if s.kind == "evaluate"]
                assert sorted(evaluated) == sorted(f"{c.id}#0" for c in done if c.cycle == t)
    text = sb.format_report(report)
    assert text.count("| rows | evaluators |") == 1  # one table
    for n in SIZES:
        assert f"| sleep {DURATION_S:g} s | {n} |" in text
        assert f"| driver | {n} |" in text
    assert "StubGenerationActor" in text  # the fakes are named where the numbers are
    json.dumps(report)
