"""The warm start and each fine-tune show their step, loss and ETA while the driver waits:
the fine-tuning actor answers `progress` during `train` (real Ray; the training itself is a
named fake that reports steps, since only the reporting path is under test here; the real
`train_lora` reporting its steps is tested in test_finetune)."""

from __future__ import annotations

import io
import sys
import time
from typing import Any

import pytest

ray = pytest.importorskip("ray")

from cluster.finetune_phase import await_training  # noqa: E402
from llmnas_dist.config import ClusterConfig, FinetuneConfig  # noqa: E402
from llmnas_dist.generation.finetune import TrainStep  # noqa: E402
from workers.finetuner import Finetuner, finetune_options  # noqa: E402

pytestmark = pytest.mark.integration

STEPS = 4


class SteppingFinetuner(Finetuner):
    """The real actor body with a FAKE training: four steps of a second, each reported
    through the body's own step hook, as `train_lora` reports them."""

    def train(self, *args: Any, **kwargs: Any) -> dict[str, Any]:
        self.latest = None
        started = time.monotonic()
        for step in range(1, STEPS + 1):
            time.sleep(1.0)
            self._heard(TrainStep(step, STEPS, 1.0 / step, time.monotonic() - started))
        return {"steps": STEPS}


# Ray workers cannot import this test module: ship the fake class by value
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


class Captured(io.StringIO):
    """stdout of a terminal: every redraw of the live line is kept."""

    def isatty(self) -> bool:
        return True


def test_the_driver_shows_training_steps_while_the_finetuner_trains(monkeypatch) -> None:
    options = finetune_options(ClusterConfig(), {"CPU": 2.0})
    actor = ray.remote(SteppingFinetuner).options(**options).remote("m", FinetuneConfig())
    out = Captured()
    monkeypatch.setattr(sys, "stdout", out)
    result = await_training(actor, actor.train.remote(), "cycle 1: fine-tune")
    assert result == {"steps": STEPS}
    lines = [ln for ln in out.getvalue().replace("\033[K", "").split("\r") if ln.strip()]
    # the actor answered `progress` while `train` ran (one poll a second): lines of the
    # steps before the last
    early = {ln.split(" | ")[0] for ln in lines[:-1]}
    assert early & {f"cycle 1: fine-tune: step {k}/4" for k in (1, 2, 3)}, lines
    assert lines[-1].startswith("cycle 1: fine-tune: step 4/4 | loss 0.250 | ETA 0 s")
    assert lines[-1].endswith("\n")
