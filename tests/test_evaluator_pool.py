"""Evaluator actors and the pool on a real local Ray (integration)."""

from __future__ import annotations

import time

import pytest

ray = pytest.importorskip("ray")

from cluster.pool import EvaluatorPool, Placement, archive_recorder, evaluator_placement  # noqa: E402
from llmnas_dist.config import EvaluationConfig  # noqa: E402
from llmnas_dist.seeds import load_seeds  # noqa: E402
from workers.evaluator import EvalTask  # noqa: E402

pytestmark = pytest.mark.integration

CFG = EvaluationConfig(cpus_per_evaluator=0.5, timeout_s=60.0, memory_limit_mb=4096, max_attempts=3)
SEEDS = load_seeds()

HANGS_IN_TRAINING = """
import torch
import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        self.fc = nn.Linear(in_shape[-3] * in_shape[-2] * in_shape[-1], out_shape[0])
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        while self.calls > 3:
            pass
        return self.fc(torch.flatten(x, 1))
"""


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
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
    seen: list[dict] = []
    assert pool.run(tasks, lambda item: seen.append(item.result)) == len(names)
    assert sorted(r["key"] for r in seen) == sorted(names)
    for r in seen:
        assert r["ok"], r["message"]
        assert 0.0 <= r["accuracy"] <= 1.0 and r["node_id"] and r["worker_id"]
        assert r["budget"] == "epochs=1" and r["gpu_id"] is None
    assert len({r["worker_id"] for r in seen}) == 2  # both actors served
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
    task = EvalTask(key="c1", code=code, dataset="digits", seed=0, budget_s=4.0, arch_hash=arch)
    pool.submit([task])
    victim = pool.in_flight()["c1"]
    time.sleep(1.5)  # inside the evaluation: the sandbox starts in well under a second
    ray.kill(victim, no_restart=True)
    items = list(pool.results())
    assert len(items) == 1 and items[0].attempts == 2 and pool.replaced == 1
    assert items[0].result["ok"], items[0].result["message"]
    record = archive_recorder(archive, run.id)
    record(items[0])
    record(items[0])  # a repeated delivery changes nothing
    rows = archive.evaluations(run.id)
    assert len(rows) == 1 and rows[0].attempt == 2
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
    assert out["hang"].result["error_class"] == "timeout" and out["hang"].attempts == 1
    assert out["good"].result["ok"] and pool.replaced == 0
    assert out["hang"].result["worker_id"] == out["good"].result["worker_id"]
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
    assert [item.result["ok"] for item in pool.results()] == [True]
    pool.shutdown()
