"""Evaluator actors and the pool on a real local Ray (integration)."""

from __future__ import annotations

import time

import pytest
from fixtures import HANGS_IN_TRAINING

ray = pytest.importorskip("ray")

from cluster.pool import EvaluatorPool, Placement, archive_recorder, evaluator_placement  # noqa: E402
from llmnas_dist.config import EvaluationConfig  # noqa: E402
from llmnas_dist.errors import PlacementError  # noqa: E402
from llmnas_dist.seeds import load_seeds  # noqa: E402
from workers.evaluator import EvalTask  # noqa: E402

pytestmark = pytest.mark.integration

CFG = EvaluationConfig(cpus_per_evaluator=0.5, timeout_s=60.0, memory_limit_mb=4096, max_attempts=3)
SEEDS = load_seeds()


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    # one logical GPU (none is there): the placement tests below get a GPU id from Ray
    ray.init(num_cpus=2, num_gpus=1, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _pool(size: int, cfg: EvaluationConfig = CFG) -> EvaluatorPool:
    return EvaluatorPool(cfg, placement=Placement(size, 0.0, cfg.cpus_per_evaluator))


def test_placement_pins_one_evaluator_per_gpu() -> None:
    assert evaluator_placement(CFG, {"CPU": 64, "GPU": 4}) == Placement(4, 1.0, 0.5)
    assert evaluator_placement(CFG, {"CPU": 2}) == Placement(2, 0.0, 0.5)
    fixed = EvaluationConfig(evaluators=3, cpus_per_evaluator=2)
    assert evaluator_placement(fixed, {"CPU": 8}).count == 3


def test_placement_leaves_inference_gpus_alone() -> None:
    # 6 GPUs, of which 4 on evaluator nodes: 4 evaluators, each pinned to such a node
    tagged = evaluator_placement(CFG, {"CPU": 64, "GPU": 6, "llmnas_evaluator": 4})
    assert (tagged.count, tagged.num_gpus) == (4, 1.0)
    assert tagged.options()["resources"] == {"llmnas_evaluator": 1.0}
    assert evaluator_placement(CFG, {"CPU": 64, "GPU": 6}).options()["resources"] == {}


def test_two_actors_stream_seed_results() -> None:
    pool = _pool(2)
    names = ["plain_cnn", "mlp_mixer", "squeezenet_fire"]
    tasks = [EvalTask(key=n, code=SEEDS[n], dataset="digits", seed=0, epochs=1.0) for n in names]
    seen: list = []
    assert pool.run(tasks, lambda item: seen.append(item.result)) == len(names)
    assert sorted(r.key for r in seen) == sorted(names)
    for r in seen:
        assert r.ok, r.message
        assert 0.0 <= r.accuracy <= 1.0 and r.node_id and r.worker_id
        assert r.budget == "epochs=1" and r.gpu_id is None
    assert len({r.worker_id for r in seen}) == 2  # both actors served
    pool.shutdown()


def test_killed_actor_is_replaced_and_its_candidate_recorded_once(tmp_path) -> None:
    archive_mod = pytest.importorskip("db.archive")
    archive = archive_mod.Archive.from_url(f"sqlite:///{tmp_path / 'a.db'}")
    archive.upgrade()
    run = archive.create_run({}, run_id="kill-test")
    code = SEEDS["resnet_basic"]
    archive.add_architecture(code)
    arch = archive_mod.code_hash(code)
    pool = _pool(1)
    warm = EvalTask(key="warm", code=SEEDS["plain_cnn"], dataset="digits", epochs=0.1)
    assert pool.run([warm], lambda item: None) == 1  # the actor is up, its sandbox warm
    spans: list = []
    pool.on_span = spans.append
    task = EvalTask(key="c1", code=code, dataset="digits", seed=0, budget_s=4.0, arch_hash=arch)
    pool.submit([task])
    victim = pool.in_flight()["c1"]
    time.sleep(1.5)  # inside the evaluation: the sandbox starts in well under a second
    ray.kill(victim, no_restart=True)
    items = list(pool.results())
    assert len(items) == 1 and items[0].attempts == 2 and pool.replaced == 1
    assert items[0].result.ok, items[0].result.message
    record = archive_recorder(archive, run.id)
    record(items[0])
    record(items[0])  # a repeated delivery changes nothing
    rows = archive.evaluations(run.id)
    assert len(rows) == 1 and rows[0].attempt == 2
    # both attempts are spans: the first died with its actor, on that actor's node
    assert [(sp.key, sp.attempt, sp.outcome) for sp in spans] == [
        ("c1", 1, "lost"),
        ("c1", 2, "ok"),
    ]
    assert spans[0].actor == victim._actor_id.hex() and spans[0].node_id
    assert spans[1].actor != spans[0].actor and spans[0].seconds >= 1.0
    pool.shutdown()
    archive.close()


def test_hostile_program_fails_and_the_actor_keeps_serving() -> None:
    cfg = EvaluationConfig(cpus_per_evaluator=0.5, timeout_s=3.0, max_attempts=2)
    pool = _pool(1, cfg)
    pool.submit(
        [
            EvalTask(key="hang", code=HANGS_IN_TRAINING, dataset="digits", epochs=1.0),
            EvalTask(key="good", code=SEEDS["plain_cnn"], dataset="digits", epochs=1.0),
        ]
    )
    out = {item.task.key: item for item in pool.results()}
    assert out["hang"].result.error_class == "timeout" and out["hang"].attempts == 1
    assert out["good"].result.ok and pool.replaced == 0
    assert out["hang"].result.worker_id == out["good"].result.worker_id
    pool.shutdown()


def test_pool_grows_and_shrinks_between_cycles() -> None:
    pool = _pool(1)
    pool.resize(3)
    assert len(pool.actors) == 3
    pool.resize(1)
    assert len(pool.actors) == 1
    with pytest.raises(ValueError):
        pool.resize(0)
    pool.submit([EvalTask(key="x", code=SEEDS["plain_cnn"], dataset="digits", epochs=0.2)])
    assert [item.result.ok for item in pool.results()] == [True]
    pool.shutdown()


def test_a_straggler_costs_its_adaptive_deadline_not_the_timeout() -> None:
    # after two successful evaluations at a budget, a third may take 3x their median
    # (at least 8 s), far under the 300 s ceiling
    cfg = EvaluationConfig(
        cpus_per_evaluator=0.5,
        timeout_s=300.0,
        deadline_factor=3.0,
        deadline_floor_s=8.0,
        deadline_min_samples=2,
    )
    pool = _pool(1, cfg)
    spans: list = []
    pool.on_span = spans.append
    good = [
        EvalTask(key=f"good{i}", code=SEEDS["plain_cnn"], dataset="digits", seed=i, epochs=0.5)
        for i in range(2)
    ]
    first = {item.task.key: item.result for item in _run(pool, good)}
    assert all(r.ok and r.deadline_s == 300.0 for r in first.values())  # no history yet
    hang = EvalTask(key="hang", code=HANGS_IN_TRAINING, dataset="digits", epochs=0.5)
    (result,) = [item.result for item in _run(pool, [hang])]
    median = sorted(r.duration_s for r in first.values())[0:2]
    expected = max(8.0, 3.0 * (median[0] + median[1]) / 2)
    assert result.deadline_s == pytest.approx(expected)
    assert result.error_class == "timeout" and not result.ok
    assert result.accuracy is None  # a timed-out program is never scored
    assert result.ended - result.started < expected + 15.0
    assert [(sp.key, sp.kind, sp.outcome) for sp in spans][-1] == ("hang", "evaluate", "failed")
    pool.shutdown()


def _run(pool: EvaluatorPool, tasks: list[EvalTask]) -> list:
    out: list = []
    pool.run(tasks, out.append)
    return out


def test_pool_reports_where_each_evaluator_runs() -> None:
    pool = _pool(2)
    places = pool.wait_ready(timeout_s=120)
    assert len(places) == 2 and len({p.actor for p in places}) == 2
    assert all(p.node_id and p.gpu_ids == () and p.problem is None for p in places)
    pool.shutdown()


def test_gpu_ids_without_cuda_stop_the_pool_naming_them() -> None:
    # this Ray declares a GPU the machine lacks: Ray assigns its id, CUDA sees none
    pool = EvaluatorPool(CFG, placement=Placement(1, 1.0, 0.5))
    task = EvalTask(key="x", code=SEEDS["plain_cnn"], dataset="digits", epochs=0.2)
    with pytest.raises(PlacementError, match=r"GPU id\(s\) 0 on node .* CUDA sees no device"):
        pool.run([task], lambda item: None)
    pool.shutdown()


def test_logical_gpus_train_on_the_cpu_when_allowed() -> None:
    pool = EvaluatorPool(CFG, placement=Placement(1, 1.0, 0.5), logical_gpus=True)
    task = EvalTask(key="x", code=SEEDS["plain_cnn"], dataset="digits", epochs=0.2)
    (item,) = _run(pool, [task])
    assert item.result.ok and item.result.device == "cpu" and item.result.gpu_id == "0"
    pool.shutdown()


class _BrokenEvaluator:
    """An evaluator whose constructor always raises (the pool must not replace it forever)."""

    def __init__(self, evaluation, admission=None):
        raise OSError("no sandbox on this node")

    def where(self):  # never reached: the constructor raised
        raise AssertionError


def test_evaluators_that_never_start_stop_the_pool() -> None:
    pool = EvaluatorPool(
        CFG, placement=Placement(1, 0.0, 0.5), actor_cls=ray.remote(_BrokenEvaluator)
    )
    task = EvalTask(key="x", code=SEEDS["plain_cnn"], dataset="digits", epochs=0.2)
    with pytest.raises(RuntimeError, match="died while starting 3 times"):
        pool.run([task], lambda item: None)
    pool.shutdown()
