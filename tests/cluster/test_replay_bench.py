"""bench/replay_bench.py's choice of what a replayed cycle starts from, on a real archive:
the cycle's first attempts of the mode asked, and a novelty index holding exactly what the
run held before that cycle."""

from __future__ import annotations

from fixtures import load_bench

from llmnas_dist.admission.novelty import minhash
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.seeds import load_seeds
from llmnas_dist.vocab import Mode

rb = load_bench("replay_bench")


def _program(i: int) -> str:
    return "\n".join(f"x{i}_{j} = layer_{i}_{j}(x{j})" for j in range(30)) + "\n"


def test_a_replayed_cycle_starts_from_its_first_attempts_and_the_archive_before_it(archive):
    cfg = AdmissionConfig()
    run = archive.create_run({}, run_id="r-replay", dataset="digits", budget="e1")
    hashes = []
    for cycle, i in ((0, 0), (1, 1), (2, 2)):  # one program admitted in each cycle
        code = _program(i)
        cid = archive.add_candidate(run.id, cycle, 0, mode=Mode.DELTA, raw_output=code)
        signature = minhash(code, cfg.num_perm, cfg.shingle_size)
        hashes.append(archive.admit_candidate(cid, code, signature=signature))
    parent = hashes[1]
    archive.add_candidate(run.id, 2, 1, mode=Mode.DELTA, parent_hash=parent, prompt="p1")
    archive.add_candidate(run.id, 2, 1, mode=Mode.DELTA, parent_hash=parent, attempt=1)
    archive.add_candidate(run.id, 2, 2, mode=Mode.FULL, parent_hash=parent, prompt="p2")

    slots = rb.run_slots(archive, run.id, 2, "delta")
    assert [(s.slot, s.attempt, s.prompt) for s in slots] == [(1, 0, "p1")]
    assert [s.slot for s in rb.run_slots(archive, run.id, 2, "full")] == [2]

    class Config:
        admission = cfg

    index = rb.index_before(archive, run.id, 2, Config)
    assert hashes[0] in index and hashes[1] in index and hashes[2] not in index


def test_the_replay_counts_the_builds_generation_runs_before_returning(monkeypatch):
    """Its A/B of two checkouts compares the sandboxed builds of end-tag checks: each call
    of `AnswerTarget.build` is one, failed builds included."""
    from llmnas_dist.admission import finished
    from llmnas_dist.admission.build import BuildReport
    from llmnas_dist.admission.finished import AnswerTarget, BuildFault

    monkeypatch.setattr(finished, "build_check", finished.build_check)  # restored after
    spent = rb.count_builds()
    target = AnswerTarget((1, 8, 8), 10, AdmissionConfig())
    net = load_seeds()["plain_cnn"]
    assert isinstance(target.build(net), BuildReport)
    fault = target.build(net.replace("nn.Linear(c_in,", "nn.Linear(c_in + 7,"))
    assert isinstance(fault, BuildFault) and "build" in fault.why
    assert spent["builds"] == 2 and spent["build_seconds"] > 0
