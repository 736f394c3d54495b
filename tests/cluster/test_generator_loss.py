"""A generation actor lost mid-call: a fresh one answers the same requests with the same
seed, the answers are recorded once, and the lost call is a span (real Ray; the generation
engine is a named fake, since only the replacement logic is under test here)."""

from __future__ import annotations

import os
import sys
import time
from types import SimpleNamespace

import pytest

ray = pytest.importorskip("ray")

import cluster.generation_phase as phase_mod  # noqa: E402
from cluster.cycle import Settings, Slot  # noqa: E402
from cluster.driver import Driver  # noqa: E402
from cluster.generation_phase import Call  # noqa: E402
from db.archive import Archive  # noqa: E402
from llmnas_dist.config import build_config  # noqa: E402
from llmnas_dist.generation.engine import Answer  # noqa: E402
from workers.generator import GenRequest  # noqa: E402
from workers.gpus import locate  # noqa: E402

pytestmark = pytest.mark.integration


class FakeGeneration:
    """FAKE generation engine: dies on its first call when told to; otherwise answers each
    prompt with the seed it was given (so the test can see the seed survived the restart)."""

    def __init__(self, die: bool) -> None:
        self.die = die

    def generate(self, requests: list[GenRequest], seed: int, alone: bool) -> list[Answer]:
        if self.die:
            time.sleep(0.5)
            os._exit(1)  # the process is gone, as with a lost node or the OOM killer
        started = time.time()
        where = locate([], False, "fake")
        return [Answer(f"seed {seed}", 0, 2, 0.0, key=r.key, started=started,
                       ended=time.time(), where=where)
                for r in requests]  # fmt: skip

    def where(self):
        return locate([], False, "fake")


# Ray workers cannot import this test module: ship the fake class by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
FakeGenerationActor = ray.remote(FakeGeneration)


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def test_a_lost_generation_actor_is_replaced_and_its_call_resent(tmp_path, monkeypatch) -> None:
    monkeypatch.setattr(
        phase_mod, "start_generator", lambda cfg: FakeGenerationActor.remote(die=False)
    )
    cfg = build_config(
        {"archive": {"url": f"sqlite:///{tmp_path / 'a.db'}"}, "generation": {"max_retries": 0}}
    )
    with Archive(cfg.archive) as archive:
        archive.create_run(cfg, run_id="r")
        archive.start_cycle("r", 1)
        pool = SimpleNamespace(busy=lambda: False, refs=lambda: [], on_span=None, device_kind="cpu")
        doomed = FakeGenerationActor.remote(die=True)
        actors = SimpleNamespace(generators=[doomed], pool=pool)
        driver = Driver(cfg, archive, "r", actors)  # type: ignore[arg-type]
        driver.spans.cycle = 1
        slots = [Slot(1, i, "delta", f"prompt {i}", parent_code="x = 1\n") for i in range(2)]
        requests = [GenRequest(f"{s.index}:0", s.prompt) for s in slots]
        driver.phase.send(Call([(s, 0, s.prompt) for s in slots], requests, 1234, 0, time.time()))
        driver.phase.drain(Settings(1, 1.0, None))
        cands = archive.candidates("r", cycle=1)
        spans = archive.spans("r", cycle=1)
    assert actors.generators[0] is not doomed  # replaced
    assert sorted((c.slot, c.attempt) for c in cands) == [(0, 0), (1, 0)]  # once each
    assert {c.raw_output for c in cands} == {"seed 1234"}  # the same keyed seed
    generate = [(s.outcome, s.attempt) for s in spans if s.kind == "generate"]
    assert generate == [("lost", 1), ("ok", 1)]
    assert sum(s.kind == "admit" for s in spans) == 2
