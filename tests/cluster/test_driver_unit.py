"""The driver's pure parts and its command line, without Ray: keyed random streams, cycle
settings, the reliability gate over a real archive, the per-cycle table, usage errors."""

from __future__ import annotations

import json
import random
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import pytest
import yaml
from fixtures import ROOT

from cluster.cli import main
from cluster.cycle import Evaluations, Settings, Slot, deal_parents, keyed_rng, keyed_seed
from cluster.driver import Driver
from cluster.generation_phase import Call
from cluster.progress import (
    Mark,
    PhaseClock,
    Progress,
    StudyProgress,
    TrainingProgress,
    cycle_rows,
    cycle_table,
    duration,
    found_summary,
    now_mark,
)
from db.archive import Archive
from db.contract import Elite
from llmnas_dist.admission.grammar import delta_grammar
from llmnas_dist.config import Config, build_config, load_config
from llmnas_dist.errors import ConfigError
from llmnas_dist.evaluation.recipe import Recipe
from llmnas_dist.generation.engine import Answer
from llmnas_dist.generation.finetune import TrainStep
from llmnas_dist.seeds import load_seeds
from llmnas_dist.vocab import CandidateStatus, Mode, RunStatus, code_hash
from workers.evaluator import EvalTask


def test_keyed_streams_do_not_depend_on_order_or_process() -> None:
    first = [keyed_rng(7, "parent", 1, s).random() for s in range(5)]
    backwards = [keyed_rng(7, "parent", 1, s).random() for s in reversed(range(5))]
    assert first == list(reversed(backwards))
    assert keyed_rng(7, "parent", 1, 0).random() != keyed_rng(8, "parent", 1, 0).random()
    assert keyed_seed(0, "generate", 1, 0, 0) == keyed_seed(0, "generate", 1, 0, 0)
    assert keyed_seed(0, "generate", 1, 0, 0) != keyed_seed(0, "generate", 1, 2, 0)


def test_settings_round_trip_and_budget() -> None:
    s = Settings(2, 1.0, None, {"snr": 0.5})
    assert Settings.from_dict(s.to_dict()) == s
    assert s.budget == "epochs=1"
    assert Settings(1, None, 30.0).budget == "budget_s=30"


def _noisy_archive(tmp_path: Path, action: str) -> tuple[Archive, Driver]:
    """Three architectures whose seeds disagree far more than they differ: SNR << 1."""
    cfg = build_config(
        {
            "reliability": {"snr_threshold": 1.0, "action": action, "max_seeds": 2},
            "archive": {"url": f"sqlite:///{tmp_path / 'a.db'}"},
        }
    )
    archive = Archive(cfg.archive)
    archive.create_run(cfg, run_id="r")
    for i, scores in enumerate([(0.1, 0.9), (0.8, 0.2), (0.5, 0.55)]):
        code = f"# program {i}\n"
        archive.add_architecture(code, run_id="r")
        for seed, score in enumerate(scores):
            archive.record_evaluation(
                "r", code_hash(code), dataset="digits", seed=seed, budget="epochs=1", score=score
            )
    return archive, Driver(cfg, archive, "r", actors=None)  # type: ignore[arg-type]


def test_reusable_copies_an_earlier_runs_result_and_leaves_the_rest_to_train(
    tmp_path: Path,
) -> None:
    """evaluation.reuse: a task another run trained under the same recipe becomes a result
    naming the row it copies; a time budget, an unknown program, another recipe or reuse
    switched off leave the task to the pool."""
    archive = Archive(build_config({"archive": {"url": f"sqlite:///{tmp_path / 'a.db'}"}}).archive)
    fp = Recipe(epochs=1.0).fingerprint
    archive.create_run(run_id="r1", dataset="digits", budget="epochs=1")
    archive.create_run(run_id="r2", dataset="digits", budget="epochs=1")
    code = "# program\n"
    h = code_hash(code)
    archive.add_architecture(code, run_id="r1")
    archive.record_evaluation(
        "r1", h, dataset="digits", seed=0, budget="epochs=1", score=0.625, loss=0.5, recipe=fp
    )
    (original,) = archive.evaluations("r1")
    task = EvalTask(key="c#0", code=code, dataset="digits", seed=0, epochs=1.0, arch_hash=h)
    others = [
        replace(task, key="time", epochs=None, budget_s=1.0),
        replace(task, key="seed 1", seed=1),
        replace(task, key="unknown", arch_hash=code_hash("# other\n")),
    ]
    reused, fresh = Evaluations(archive, "r2", fp).reusable([task, *others])
    assert [f.key for f in fresh] == [t.key for t in others]
    (item,) = reused
    r = item.result
    assert (item.task, item.attempts, r.ok, r.key) == (task, 0, True, "c#0")
    assert (r.accuracy, r.loss, r.budget, r.reused_from, r.recipe) == (
        0.625,
        0.5,
        "epochs=1",
        original.id,
        fp,
    )
    assert r.duration_s is None and r.worker_id is None  # no time was spent on it here
    for recipe in (None, Recipe(epochs=1.0, lr=0.5).fingerprint):
        assert Evaluations(archive, "r2", recipe).reusable([task]) == ([], [task])


@pytest.mark.parametrize(("n_elites", "most"), [(4, 1), (3, 2), (1, 4)])
def test_a_cycles_parents_are_dealt_without_replacement_within_a_mode(
    tmp_path: Path, n_elites: int, most: int
) -> None:
    """8 slots, 4 of each mode: every elite proposes once in a mode before any twice."""
    cfg = build_config(
        {
            "ce": {"candidates_per_cycle": 8, "seed": 5},
            "generation": {"delta_fraction": 0.5},
            "archive": {"url": f"sqlite:///{tmp_path / 'a.db'}"},
        }
    )
    archive = Archive(cfg.archive)
    archive.create_run(cfg, run_id="r")
    driver = Driver(cfg, archive, "r", actors=None)  # type: ignore[arg-type]
    driver.elites = [Elite(i + 1, f"{i:064x}", 0.5, 1, f"# elite {i}\n") for i in range(n_elites)]
    slots = driver.parents(1)
    assert slots == driver.parents(1)  # keyed: a resumed driver deals the same
    for mode in Mode:
        counts = Counter(s.parent_hash for s in slots if s.mode is mode)
        assert sum(counts.values()) == 4 and max(counts.values()) == most
        assert len(counts) == min(4, n_elites)
    # another cycle deals in another order
    assert [s.parent_hash for s in driver.parents(2)] != [s.parent_hash for s in slots] or (
        n_elites == 1
    )


@pytest.mark.parametrize(
    ("n", "alpha", "quotas"),
    [
        (4, 1.0, [2, 1, 1, 0]),  # shares 1.92 .96 .64 .48
        (3, 1.0, [1, 1, 1, 0]),  # 1.44 .72 .48 .36: the remainders .72 and .48 beat .44
        (8, 1.0, [4, 2, 1, 1]),  # 3.84 1.92 1.28 .96
        (4, 3.0, [3, 1, 0, 0]),
        (4, 0.0, [1, 1, 1, 1]),
        (6, 0.0, [2, 2, 1, 1]),  # dealt round: the first two of the shuffled deck twice
    ],
)
def test_parents_are_dealt_by_rank_as_quotas(n: int, alpha: float, quotas: list[int]) -> None:
    elites = ["first", "second", "third", "fourth"]
    dealt = deal_parents(elites, n, alpha, random.Random(3))
    assert len(dealt) == n
    counts = Counter(dealt)
    if alpha == 0:  # rank plays no part: which elites repeat is the shuffle's
        assert sorted(counts.values(), reverse=True) == quotas[: len(counts)]
    else:
        assert [counts[e] for e in elites] == quotas
    assert dealt == deal_parents(elites, n, alpha, random.Random(3))  # keyed
    assert deal_parents([], n, alpha, random.Random(3)) == []


def test_a_negative_parent_alpha_is_refused() -> None:
    with pytest.raises(ValueError, match="alpha"):
        deal_parents(["a"], 1, -1.0, random.Random(0))
    with pytest.raises(ConfigError, match="parent_alpha"):
        build_config({"ce": {"parent_alpha": -1}})


def test_the_driver_deals_the_best_elite_most_with_a_parent_alpha(tmp_path: Path) -> None:
    cfg = build_config(
        {
            "ce": {"candidates_per_cycle": 8, "seed": 5, "parent_alpha": 1.0},
            "generation": {"delta_fraction": 0.5},
            "archive": {"url": f"sqlite:///{tmp_path / 'a.db'}"},
        }
    )
    archive = Archive(cfg.archive)
    archive.create_run(cfg, run_id="r")
    driver = Driver(cfg, archive, "r", actors=None)  # type: ignore[arg-type]
    driver.elites = [Elite(i + 1, f"{i:064x}", 0.9 - i / 10, 1, f"# elite {i}\n") for i in range(4)]
    slots = driver.parents(1)
    for mode in Mode:  # 4 slots a mode: ranks 1, 1, 2, 3
        counts = Counter(s.parent_hash for s in slots if s.mode is mode)
        assert [counts[e.hash] for e in driver.elites] == [2, 1, 1, 0]
        best = [s for s in slots if s.mode is mode and s.parent_hash == driver.elites[0].hash]
        assert all(s.parent_code == driver.elites[0].code for s in best)


class _RecordingAdapters:
    """A fake of the fine-tune phase (its actor trains LoRA for minutes): what it was asked."""

    def __init__(self, recorded: dict[int, str]) -> None:
        self.recorded, self.version, self.trained, self.loaded = recorded, None, [], []

    def finetune(self, t: int, elites: list[Elite]) -> tuple[int, str]:
        if t not in self.recorded:
            self.trained.append((t, [e.hash for e in elites]))
            self.recorded[t] = f"adapters/v{t:03d}"
        return t, self.recorded[t]

    def load(self, version: int, path: str) -> None:
        self.loaded.append(version)
        self.version = version


def test_cycle_ts_update_trains_on_e_t_once_and_loads_it(tmp_path: Path) -> None:
    """Steps 6-7 of cycle t run as cycle t+1 starts, on E_t (the elites cycle t completed
    with); a resumed driver that finds the update recorded loads it without training."""
    cfg = build_config({"archive": {"url": f"sqlite:///{tmp_path / 'a.db'}"}})
    archive = Archive(cfg.archive)
    archive.create_run(cfg, run_id="r")
    elites = [Elite(i + 1, f"{i:064x}", 0.9 - i / 10, 1, f"# elite {i}\n") for i in range(3)]
    recorded: dict[int, str] = {}
    trained = []
    for _ in range(2):  # the first driver trains; the second (a resume) finds it recorded
        driver = Driver(cfg, archive, "r", actors=None)  # type: ignore[arg-type]
        driver.adapters = fake = _RecordingAdapters(recorded)  # type: ignore[assignment]
        driver.elites = elites
        driver.update_adapter(2)
        assert fake.loaded == [2] and fake.version == 2
        driver.update_adapter(2)  # asked again: neither trained nor loaded again
        assert fake.loaded == [2]
        trained.append(fake.trained)
    assert trained == [[(2, [e.hash for e in elites])], []]
    assert recorded == {2: "adapters/v002"}


@pytest.mark.parametrize(
    ("action", "expected"),
    [("warn", (1, 1.0)), ("add_seeds", (2, 1.0)), ("raise_budget", (1, 2.0))],
)
def test_reliability_gate_acts_on_low_snr(tmp_path: Path, action: str, expected) -> None:
    archive, driver = _noisy_archive(tmp_path, action)
    try:
        decided = driver.studies.gate(Settings(1, 1.0, None))
        assert (decided.seeds, decided.epochs) == expected
        assert decided.gate["low"] is True and decided.gate["n_archs"] == 3
        assert decided.gate["snr"] < 1.0
        # add_seeds stops at max_seeds
        assert driver.studies.gate(Settings(2, 1.0, None)).seeds == 2
    finally:
        archive.close()


def test_gate_needs_two_studied_architectures(tmp_path: Path) -> None:
    cfg = build_config({"archive": {"url": f"sqlite:///{tmp_path / 'a.db'}"}})
    with Archive(cfg.archive) as archive:
        archive.create_run(cfg, run_id="r")
        driver = Driver(cfg, archive, "r", actors=None)  # type: ignore[arg-type]
        same = Settings(1, 1.0, None)
        assert driver.studies.gate(same) is same


def test_a_prompt_the_model_could_not_take_is_rejected_without_retry(tmp_path: Path) -> None:
    cfg = build_config(
        {"archive": {"url": f"sqlite:///{tmp_path / 'a.db'}"}, "generation": {"max_retries": 2}}
    )
    with Archive(cfg.archive) as archive:
        archive.create_run(cfg, run_id="r")
        archive.start_cycle("r", 1)
        driver = Driver(cfg, archive, "r", actors=None)  # type: ignore[arg-type]
        slot = Slot(1, 0, "delta", "the prompt", parent_code="class Net: ...\n")
        error = "prompt of 3000 tokens + max_new_tokens 384 exceeds max_model_len 2048"
        answer = Answer("", 3000, 0, 0.0, error=error)
        settings = Settings(1, 1.0, None)
        driver.phase.on_generated(Call([(slot, 0, "the prompt")]), [answer], settings)
        [cand] = archive.candidates("r", cycle=1)
        assert driver.phase.resume_slot(slot, cand, settings) == []  # nor after a restart
    assert cand.status is CandidateStatus.REJECTED
    assert (cand.error_class, cand.message) == ("prompt_too_long", error)
    assert cand.prompt == "the prompt"  # recorded as asked
    # a retry prompt carries the parent and the answer again: it would not fit either
    assert not driver.phase.calls


@pytest.mark.parametrize("unoriginal", [True, False])
def test_a_delta_that_repeats_the_archive_is_retried_only_when_configured(
    tmp_path: Path, unoriginal: bool
) -> None:
    """generation.retry_unoriginal: false drops the retries of duplicate and not_novel
    deltas (the default config's choice), not those of deltas that failed to build, nor any
    retry of a whole program (never retried)."""
    cfg = build_config(
        {
            "archive": {"url": f"sqlite:///{tmp_path / 'a.db'}"},
            "generation": {"max_retries": 1, "retry_unoriginal": unoriginal},
        }
    )
    driver = Driver(cfg, archive=None, run_id="r", actors=None)  # type: ignore[arg-type]
    delta, full = (Slot(1, 0, mode, "p", parent_code="x = 1\n") for mode in ("delta", "full"))
    for error_class in ("duplicate", "not_novel"):
        assert driver.phase.retryable(delta, 0, error_class) is unoriginal
    assert driver.phase.retryable(delta, 0, "build_failed")
    assert not driver.phase.retryable(delta, 1, "build_failed")  # max_retries reached
    assert not driver.phase.retryable(full, 0, "build_failed")


def test_cycle_table_counts_valid_novel_and_evaluated(tmp_path: Path) -> None:
    cfg = Config()
    with Archive.from_url(f"sqlite:///{tmp_path / 'a.db'}") as archive:
        archive.create_run(cfg, run_id="r")
        archive.start_cycle("r", 1)
        outcomes = ["evaluated", "not_novel", "no_delta", "failed"]
        for slot, outcome in enumerate(outcomes):
            cid = archive.add_candidate("r", 1, slot, mode="delta", constrained=slot % 2 == 0)
            if outcome in ("not_novel", "no_delta"):
                archive.update_candidate_status(cid, "rejected", error_class=outcome)
                continue
            code = f"# p{slot}\n"
            h = archive.admit_candidate(cid, code)
            archive.update_candidate_status(cid, "evaluating")
            ok = outcome == "evaluated"
            archive.record_evaluation(
                "r", h, dataset="digits", seed=0, budget="epochs=1", score=0.5 if ok else None
            )
            archive.update_candidate_status(cid, CandidateStatus.EVALUATED if ok else "failed")
        gamma, elites = archive.elites("r", 0.25)
        archive.complete_cycle("r", 1, gamma, len(elites), elites)
        rows = cycle_rows(archive, "r")
    assert rows == [
        {
            "cycle": 1,
            "generated": 4,
            "constrained": 2,
            "valid": 3,
            "novel": 2,
            "evaluated": 1,
            "gamma_t": 0.5,
            "best": 0.5,
            "elite_mean": 0.5,
            "completed": True,
        }
    ]
    table = cycle_table(rows)
    assert table.splitlines()[0].split() == [
        "cycle",
        "generated",
        "constrained",
        "valid",
        "novel",
        "evaluated",
        "gamma_t",
        "best",
        "elite_mean",
    ]
    assert table.splitlines()[1].split() == [
        "1", "4", "2", "3", "2", "1", "0.5000", "0.5000", "0.5000"
    ]  # fmt: skip


def _scored(archive: Archive, cycle: int, slot: int, code: str, score: float, parent=None) -> str:
    cid = archive.add_candidate("r", cycle, slot, mode="delta", parent_hash=parent)
    h = archive.admit_candidate(cid, code)
    archive.record_evaluation("r", h, dataset="digits", seed=0, budget="epochs=1", score=score)
    archive.update_candidate_status(cid, CandidateStatus.EVALUATED)
    return h


def test_found_summary_names_the_best_their_origin_and_the_commands(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    with Archive.from_url(url) as archive:
        archive.create_run(Config(), run_id="r")
        assert "no architecture was scored" in found_summary(archive, "r")
        seed_a = _scored(archive, 0, 0, "# seed a\n", 0.6)
        seed_b = _scored(archive, 0, 1, "# seed b\n", 0.4)
        child = _scored(archive, 2, 0, "# child\n", 0.8, parent=seed_a)
        _scored(archive, 2, 1, "# worst\n", 0.1, parent=seed_b)
        text = found_summary(archive, "r")
    lines = text.splitlines()
    assert lines[0] == "run r: the 3 best architectures"
    assert lines[1].split() == ["1.", child[:12], "score", "0.8000", "params", "-", "cycle",
                                "2,", "from", seed_a[:12]]  # fmt: skip
    assert lines[2].split()[1] == seed_a[:12] and lines[2].endswith("seed")
    assert lines[3].split()[1] == seed_b[:12]
    assert f"archive: {url}" in lines
    assert f"llmnas report r --archive {url}" in text
    assert f"llmnas archive top --run r --archive {url}" in text
    assert f"llmnas archive show {child[:12]} --archive {url}" in text


def test_default_run_config_is_the_embedded_file() -> None:
    cfg = load_config(environ={})
    shipped = yaml.safe_load((ROOT / "llmnas_dist" / "configs" / "default.yaml").read_text())
    assert cfg.generation.max_new_tokens == shipped["generation"]["max_new_tokens"]
    assert cfg.ce.cycles == shipped["ce"]["cycles"] >= 3


def test_run_and_scale_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    assert main(["run", "--evaluators", "0", "--archive", url]) == 2
    assert "--evaluators" in capsys.readouterr().err
    assert main(["run", "--resume", "nope", "--archive", url]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    assert main(["scale", "nope", "3", "--archive", url]) == 2
    assert "no run 'nope'" in capsys.readouterr().err
    with Archive.from_url(url) as archive:
        archive.create_run(Config(), run_id="done")
        archive.finish_run("done", RunStatus.COMPLETED)
    assert main(["scale", "done", "3", "--archive", url]) == 2
    assert "only a running run" in capsys.readouterr().err
    assert main(["run", "--resume", "done", "--archive", url]) == 2
    assert "already completed" in capsys.readouterr().err
    assert main(["scale", "done", "0", "--archive", url]) == 2


class _RecordingGenerators:
    """Stands in for the generation actors' Ray handles (`generate.remote`): records what
    the driver sends, generates nothing. The real actors run in test_driver_run.py."""

    def __init__(self) -> None:
        self.sent: list[list] = []
        self.alone: list[bool] = []
        self.generate = SimpleNamespace(remote=self._remote)

    def _remote(self, requests, seed, alone):
        self.sent.append(list(requests))
        self.alone.append(alone)
        return f"ref{len(self.sent)}"


def test_what_a_grammar_cannot_prevent_is_retried_under_the_same_grammar(tmp_path: Path) -> None:
    """A constrained delta applies, but its added line is not Python: the retry (with the
    error fed back) is sampled under the parent's grammar again; with
    generation.constrained off no grammar is sent; the candidate records which it was."""
    parent = load_seeds()["plain_cnn"]
    first = parent.splitlines()[0]
    answer = f"<delta>\n--- baseline.py\n+++ improved.py\n@@ @@\n {first}\n+x = (\n</delta>"
    for constrained in (True, False):
        cfg = build_config(
            {
                "archive": {"url": f"sqlite:///{tmp_path / f'{constrained}.db'}"},
                "generation": {"max_retries": 1, "constrained": constrained},
            }
        )
        recorder = _RecordingGenerators()
        with Archive(cfg.archive) as archive:
            archive.create_run(cfg, run_id="r")
            archive.start_cycle("r", 1)
            # evaluations running (here: with the constrained run) keep generation on one thread
            pool = SimpleNamespace(busy=lambda busy=constrained: busy, device_kind="cpu")
            actors = SimpleNamespace(generators=[recorder], pool=pool)
            driver = Driver(cfg, archive, "r", actors)  # type: ignore[arg-type]
            slot = Slot(1, 0, "delta", "the prompt", parent_code=parent)
            result = Answer(answer, 0, 9, 0.0, constrained=constrained)
            driver.phase.on_generated(
                Call([(slot, 0, "the prompt")]), [result], Settings(1, 1.0, None)
            )
            [cand] = archive.candidates("r", cycle=1)
        assert cand.error_class == "syntax_error" and cand.constrained is constrained
        [[retry]] = recorder.sent
        assert retry.key == "0:1" and "syntax_error" in retry.prompt and retry.retry
        assert recorder.alone == [not constrained]
        assert retry.grammar == (delta_grammar(parent) if constrained else None)


def test_phase_clock_splits_a_cycle_at_its_last_answer(tmp_path: Path) -> None:
    clock = PhaseClock()
    with clock.phase("Ray start"):
        pass
    driver = Driver(Config(), archive=None, run_id="r", actors=None, clock=clock)  # type: ignore[arg-type]
    now = now_mark()
    started = Mark(now.at - 60.0, now.busy - 60.0)  # one core busy throughout
    driver.phase.last_answer_at = Mark(started.at + 30.0, started.busy + 30.0)
    driver.time_generation(2, started)  # answered 30 s in, evaluated until now
    names = [p.name for p in clock.spans]
    assert names == [
        "Ray start",
        "cycle 2: generate + admit (evaluating alongside)",
        "cycle 2: evaluate after the last answer",
    ]
    assert clock.spans[1].seconds == pytest.approx(30.0)
    assert clock.spans[1].cpu == pytest.approx(1 / clock.cores)
    assert clock.spans[2].seconds == pytest.approx(30.0, abs=5.0)
    assert driver.phase.last_answer_at is None  # the next cycle starts its own split
    table = clock.table()
    assert table.splitlines()[0].startswith("phases (wall time; cpu: share of this node's")
    assert "cycle 2: evaluate after the last answer" in table and "total" in table
    clock.write(tmp_path / "run" / "phases.json")
    rows = json.loads((tmp_path / "run" / "phases.json").read_text())
    assert [r["phase"] for r in rows] == names
    assert sum(r["seconds"] for r in rows) == pytest.approx(
        sum(p.seconds for p in clock.spans), abs=0.01
    )
    assert all(0.0 <= r["cpu_share"] <= 1.0 for r in rows)


def test_phase_clock_sees_the_cores_a_phase_keeps_busy() -> None:
    """The CPU share counts every process on the node: a phase that spends 0.3 CPU seconds
    in this process shows at least that much busy time; the ratio is capped at 1."""
    clock = PhaseClock()
    own = time.process_time()
    with clock.phase("spin"):
        while time.process_time() - own < 0.3:
            pass
    spun = time.process_time() - own
    phase = clock.spans[0]
    assert phase.cpu * phase.seconds * clock.cores >= 0.8 * spun
    assert phase.cpu <= 1.0


def test_driver_takes_its_seeds_and_shape_from_the_config(tmp_path: Path) -> None:
    """ce.seeds (a folder), ce.seed_sample (a seeded draw) and evaluation.input_size reach
    the driver's cycle 0 population and the shape every candidate is admitted at."""
    folder = tmp_path / "seeds"
    folder.mkdir()
    shipped = load_seeds()
    for name in ("plain_cnn", "vgg_small", "resnet_basic", "vit_tiny"):
        (folder / f"{name}.py").write_text(shipped[name])
    cfg = build_config(
        {
            "ce": {"seeds": str(folder), "seed_sample": 2, "seed": 5},
            "evaluation": {"input_size": 24},
        }
    )
    driver = Driver(cfg, archive=None, run_id="r", actors=None)  # type: ignore[arg-type]
    assert len(driver.seeds) == 2 and set(driver.seeds) <= {p.stem for p in folder.iterdir()}
    assert driver.seeds == Driver(cfg, None, "r", None).seeds  # type: ignore[arg-type]
    assert driver.spec.in_shape == (1, 24, 24) and driver.admission.dataset.in_shape == (1, 24, 24)
    default = Driver(Config(), archive=None, run_id="r", actors=None)  # type: ignore[arg-type]
    assert default.seeds == shipped and default.spec.in_shape == (1, 8, 8)


def test_a_training_line_reads_at_a_glance() -> None:
    line = TrainingProgress("warm start")
    assert line.line().startswith("warm start: preparing | ")
    line.step = TrainStep(30, 120, 0.5, 300.0)
    assert line.line().startswith("warm start: step 30/120 | loss 0.500 | ETA 15 min | ")
    assert [duration(s) for s in (45, 600, 7200)] == ["45 s", "10 min", "2.0 h"]


def test_a_study_line_counts_reuse_and_gives_an_eta() -> None:
    line = StudyProgress(0, 12)
    assert line.line().startswith("cycle 0: proxy studies: done 0/12 | ETA - | ")
    line._started -= 60.0  # a minute in, 5 done (1 of them copied): 7 left at 15 s each
    line.done, line.reused = 5, 1
    assert line.line().startswith("cycle 0: proxy studies: done 5/12, 1 reused | ETA 2 min | ")
    line.done = 12
    assert "| ETA - |" in line.line()
    progress = Progress(1, 8)
    assert "reused" not in progress.line()
    progress.done, progress.reused = 3, 2
    assert "| done 3, 2 evaluations reused | " in progress.line()


def test_a_cycle_s_generation_phase_starts_after_the_fine_tune_it_waited_for() -> None:
    """The fine-tune that opens cycle t > 1 is a phase of its own; the generation phase
    starts after it (it once started with the cycle, so the run's phases summed to more
    than its wall time by every fine-tune)."""
    clock = PhaseClock()
    driver = Driver(Config(), archive=None, run_id="r", actors=None, clock=clock)  # type: ignore[arg-type]
    driver.start = lambda t: Settings(1, 1.0, None)  # type: ignore[method-assign]
    driver.update_adapter = lambda t: time.sleep(0.4)  # type: ignore[method-assign]
    driver.parents = lambda t: []  # type: ignore[method-assign]

    def generate(t: int, slots: list, settings: Settings) -> None:
        time.sleep(0.1)
        driver.phase.last_answer_at = now_mark()

    driver.phase.run = generate  # type: ignore[method-assign]
    driver.studies.run = lambda t, settings: None  # type: ignore[method-assign]
    driver.select = lambda: (None, [])  # type: ignore[method-assign]
    driver.complete = lambda t, gamma, elites: None  # type: ignore[method-assign]
    driver.summarize = lambda t, gamma, elites, seconds: None  # type: ignore[method-assign]
    driver.run_cycle(2)
    seconds = {p.name: p.seconds for p in clock.spans}
    assert seconds["cycle 1: fine-tune, load adapter"] >= 0.4
    assert 0.1 <= seconds["cycle 2: generate + admit (evaluating alongside)"] < 0.3
