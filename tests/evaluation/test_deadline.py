"""The adaptive evaluation deadline (llmnas_dist/evaluation/deadline.py)."""

from __future__ import annotations

import pytest

from llmnas_dist.config import EvaluationConfig
from llmnas_dist.evaluation.deadline import Deadlines
from llmnas_dist.sandbox.runner import SandboxLimits


def _deadlines(**kw) -> Deadlines:
    base = {"timeout_s": 600.0, "deadline_factor": 5.0, "deadline_floor_s": 30.0}
    return Deadlines(EvaluationConfig(**{**base, **kw}))


def test_ceiling_until_enough_durations_are_known() -> None:
    d = _deadlines(deadline_min_samples=3)
    d.observe("digits", "epochs=1", 10.0)
    d.observe("digits", "epochs=1", 12.0)
    assert d.deadline("digits", "epochs=1") == 600.0
    d.observe("digits", "epochs=1", 11.0)
    assert d.deadline("digits", "epochs=1") == pytest.approx(55.0)  # 5 x median 11


def test_floor_and_ceiling_bound_the_multiple_of_the_median() -> None:
    d = _deadlines(deadline_min_samples=1)
    d.observe("digits", "epochs=1", 1.0)
    assert d.deadline("digits", "epochs=1") == 30.0  # 5 s is under the floor
    d.observe_all("mnist5k", "epochs=1", [500.0, 400.0])
    assert d.deadline("mnist5k", "epochs=1") == 600.0  # 2,250 s is over the ceiling


def test_budgets_and_datasets_keep_their_own_medians() -> None:
    d = _deadlines(deadline_min_samples=1)
    d.observe("digits", "epochs=1", 10.0)
    d.observe("digits", "epochs=5", 100.0)
    assert d.deadline("digits", "epochs=1") == 50.0
    assert d.deadline("digits", "epochs=5") == 500.0
    assert d.deadline("svhn", "epochs=1") == 600.0


def test_missing_or_nonpositive_durations_are_ignored() -> None:
    d = _deadlines(deadline_min_samples=1)
    d.observe_all("digits", "epochs=1", [None, 0.0, -3.0])
    assert d.deadline("digits", "epochs=1") == 600.0


def test_the_adaptive_deadline_can_be_turned_off() -> None:
    d = _deadlines(deadline_min_samples=1, deadline_factor=None)
    d.observe("digits", "epochs=1", 10.0)
    assert d.deadline("digits", "epochs=1") == 600.0


def test_bad_deadline_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="deadline_factor"):
        EvaluationConfig(deadline_factor=0.5)
    with pytest.raises(ValueError, match="deadline_floor_s"):
        EvaluationConfig(deadline_floor_s=0)


def test_sandbox_limits_take_the_deadline_with_cpu_time_alike() -> None:
    limits = SandboxLimits.from_evaluation(EvaluationConfig(cpus_per_evaluator=2.0))
    short = limits.with_deadline(12.5)
    assert (short.timeout_s, short.cpu_time_s, short.threads) == (12.5, 26, 2)
    assert short.memory_mb == limits.memory_mb
