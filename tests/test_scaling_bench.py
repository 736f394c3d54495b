"""bench/scaling_bench.py at tiny sizes on a real local Ray and a real SQLite archive."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

BENCH = Path(__file__).resolve().parent.parent / "bench" / "scaling_bench.py"


def _load_bench():
    # bench/ is not a package: load the file as a module (registered, so that Ray can
    # pickle its actor class and dataclasses work)
    spec = importlib.util.spec_from_file_location("scaling_bench", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["scaling_bench"] = module
    spec.loader.exec_module(module)
    return module


sb = _load_bench()

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
