"""Replay a cycle of a finished run: its prompts, adapter and archive, sampled again.

    python bench/replay_bench.py --archive sqlite:///runs/archive.db [--run RUN]
        [--cycle 2] [--mode delta] [--samples 2] [--first-sample 0] [--max-new-tokens N]
        [--temperature T] [--adapter-version V | --adapter DIR]
        [--set KEY=VALUE ...] [--out DIR]

Why: generation_bench.py asks the seeds with the warm-start adapter, where most deltas are
admitted (25 of 30, 2026-12-05); a default run's later cycles ask their elites with the
adapter fine-tuned on those elites' own children, and most of their deltas that fail are
near-copies of an archived program near the parent (runs of 2026-12-05: 12 of 40 deltas).
Only the run's own adapter and archive show that, so this bench takes them: every slot of
cycle `--cycle` of the run in `--mode` (its prompt, its parent, the adapter version it was
sampled with), sampled `--samples` times with the run's config (sampling, grammar, line and
build redraws), each answer admitted as the driver admits it: against a novelty index of
every architecture the archive held when that cycle began (the run's earlier cycles, the
seeds included, and the programs of runs created before it: a repeat run's archive),
each admitted answer joining it; built before it is returned only in the modes the config
builds (`generation.built`). Per answer: its verdict, its nearest archived program's
Jaccard, the lines redrawn (and, in the report file, the answer); in all: the verdict
counts, the wall time, the sandboxed builds generation ran before returning its answers and
their seconds.

Compare two versions of the code on the same run (an A/B): run this file from each
checkout with the same --archive, --run, --cycle and --samples; the answers are drawn
with the same seeds ((sample, slot) keyed), so what differs is the code. `--calls` sends
the slots as the driver does, `generation.batch_size` to a call, whose answers are decoded
before any is admitted (siblings of one parent in one call), and `--no-siblings` turns
off what one answer of a call tells the later ones (`lookup.tell_siblings`).
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def misapplied_count(program: str | None) -> int:
    """How many taught blocks an admitted program applies other than as taught (such children
    scored 0.067-0.148 below their parents in default runs)."""
    from llmnas_dist.admission.scopes import misapplied_blocks
    from llmnas_dist.program.source import parse_source

    return len(misapplied_blocks(parse_source(program))) if program else 0


def run_slots(archive, run_id: str, cycle: int, mode: str) -> list:
    """The cycle's first attempts of `mode`, in slot order."""
    return [
        c
        for c in archive.candidates(run_id, cycle=cycle)
        if c.attempt == 0 and c.mode.value == mode and c.parent_hash
    ]


def index_before(archive, run_id: str, cycle: int, cfg):
    """A novelty index of the architectures the archive held when `cycle` began (what the
    run's driver's index held then): the run's own cycles before it, and every program
    first archived by a run created before this one (a repeat run on one archive)."""
    from llmnas_dist.admission.novelty import NoveltyIndex

    held = {
        c.arch_hash
        for t in range(cycle)
        for c in archive.candidates(run_id, cycle=t)
        if c.arch_hash
    }
    runs = archive.list_runs()
    started = next(r.created_at for r in runs if r.id == run_id)
    earlier = {r.id for r in runs if r.created_at < started}
    index = NoveltyIndex.from_config(cfg.admission)
    for code_hash, _, signature in archive.iter_signatures():
        if code_hash in held or archive.get_architecture(code_hash).first_run in earlier:
            index.add(code_hash, signature)
    return index


def target_near(target, index, parent_hash: str, parent: str, code_of):
    """The target as the driver makes it (cluster/generation_phase.py `target_of`); for
    code older than `AnswerTarget.near` (the A of an A/B run from an older checkout), its
    neighbours alone, as that code's driver made it."""
    from llmnas_dist.admission.finished import NEAR_PARENT

    if hasattr(target, "near"):
        return target.near(index, parent_hash, parent, code_of)
    return replace(target, neighbours=index.neighbourhood(parent_hash, NEAR_PARENT))


def count_builds() -> dict:
    """Count the sandboxed builds generation runs before it returns an answer (the end-tag
    builds of `AnswerTarget.build_fault`) and their seconds, in the returned dict."""
    from llmnas_dist.admission import finished

    spent = {"builds": 0, "build_seconds": 0.0}
    real = finished.build_check

    def counted(*args, **kwargs):
        started = time.time()
        try:
            return real(*args, **kwargs)
        finally:
            spent["builds"] += 1
            spent["build_seconds"] += time.time() - started

    finished.build_check = counted
    return spent


def generation_overrides(pairs: list[str]) -> dict:
    """`--set KEY=VALUE` pairs as a dict of generation fields, each value read as YAML
    (`redraw_full=true`, `draft_tokens=8`)."""
    import yaml

    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--set takes KEY=VALUE, got {pair!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def replay(args: argparse.Namespace) -> dict:
    from db.archive import Archive
    from llmnas_dist.admission.finished import AnswerTarget
    from llmnas_dist.admission.grammar import answer_grammar
    from llmnas_dist.admission.pipeline import Admission
    from llmnas_dist.config import ArchiveConfig, load_config
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.sampling import Sampling

    cfg = load_config()
    update = {"max_new_tokens": args.max_new_tokens, "temperature": args.temperature}
    update = {k: v for k, v in update.items() if v is not None} | generation_overrides(args.set)
    # validated as a config file is: an unknown field or a wrong type is a clear error
    generation = type(cfg.generation).model_validate(cfg.generation.model_dump() | update)
    cfg = cfg.model_copy(update={"generation": generation})
    archive = Archive(ArchiveConfig(url=args.archive))
    run_id = args.run or archive.list_runs()[-1].id
    spec = dataset_spec(cfg.ce.dataset).at_size(cfg.evaluation.input_size)
    slots = run_slots(archive, run_id, args.cycle, args.mode)
    if not slots:
        raise SystemExit(f"run {run_id} has no {args.mode} slot in cycle {args.cycle}")
    adapters = {a.version: a.path for a in archive.adapters(run_id)}
    parents = [archive.get_architecture(s.parent_hash).code for s in slots]
    admission = Admission(cfg.admission, spec, index=index_before(archive, run_id, args.cycle, cfg))
    target = AnswerTarget(spec.in_shape, spec.num_classes, cfg.admission)
    gen = TransformersGenerator(cfg.generation.model, dtype=cfg.generation.dtype)
    rows, seconds, codes = [], 0.0, {}
    spent = count_builds()
    if args.no_siblings:  # the A of an A/B: answers of one call unaware of each other
        from llmnas_dist.generation import lookup

        lookup.tell_siblings = lambda *_: None
    size = cfg.generation.batch_size if args.calls else 1
    pairs = list(zip(slots, parents, strict=True))

    def near(slot, parent):
        def code_of(h):
            return codes[h] if h in codes else archive.get_architecture(h).code

        return target_near(target, admission.index, slot.parent_hash, parent, code_of)

    for sample in range(args.first_sample, args.first_sample + args.samples):
        # with --calls, every call's targets as the driver takes them: when it sends all of
        # the cycle's calls, before any answer is admitted
        sent = [near(slot, parent) for slot, parent in pairs] if size > 1 else []
        for start in range(0, len(pairs), size):
            call = pairs[start : start + size]
            # each slot alone: its target after the slots before it were admitted
            built = sent[start : start + size] if size > 1 else [near(*call[0])]
            seed = 1000 * sample + call[0][0].slot
            version = call[0][0].adapter_version
            started = time.time()
            results = gen.generate(
                [slot.prompt for slot, _ in call],
                Sampling.from_config(cfg.generation, seed=seed, mode=args.mode),
                adapter=args.adapter
                or adapters[version if args.adapter_version is None else args.adapter_version],
                grammars=[answer_grammar(args.mode, parent)[0] for _, parent in call],
                parents=[parent for _, parent in call],
                targets=[t if cfg.generation.built(args.mode) else None for t in built],
            )
            seconds += time.time() - started
            for (slot, parent), result in zip(call, results, strict=True):
                v = admission.admit(result.text, args.mode, parent)
                if v.admitted and v.code_hash and v.canonical:
                    codes[v.code_hash] = v.canonical
                row = {
                    "slot": slot.slot,
                    "sample": sample,
                    "parent": slot.parent_hash[:12],
                    "verdict": v.error_class.value if v.error_class else "admitted",
                    "jaccard": v.nearest_jaccard,
                    "message": (v.message or "")[:120],
                    "redrawn": result.grammar_note,
                    "output_tokens": result.output_tokens,
                    "misapplied": misapplied_count(v.canonical) if v.admitted else None,
                }
                print(json.dumps(row), flush=True)
                rows.append({**row, "answer": result.text})  # in the report file only
    counts = Counter(r["verdict"] for r in rows)
    return {
        "run": run_id,
        "cycle": args.cycle,
        "mode": args.mode,
        "answers": len(rows),
        "verdicts": dict(counts),
        "admitted": counts.get("admitted", 0),
        "seconds": seconds,
        "output_tokens": sum(r["output_tokens"] for r in rows),
        **spent,
        "rows": rows,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--archive", required=True, help="the run's archive URL")
    p.add_argument("--run", help="run id (default: the archive's latest run)")
    p.add_argument("--cycle", type=int, default=2, help="the cycle replayed")
    p.add_argument("--mode", choices=("delta", "full"), default="delta")
    p.add_argument("--samples", type=int, default=2, help="answers per slot")
    p.add_argument(
        "--first-sample",
        type=int,
        default=0,
        help="the first sample's number (answers are seeded by (sample, slot): 2 with "
        "--samples 2 adds two answers a slot to an earlier --samples 2)",
    )
    p.add_argument("--max-new-tokens", type=int, help="deltas' token budget (default: config)")
    p.add_argument("--temperature", type=float, help="sampling temperature (default: config)")
    p.add_argument(
        "--adapter-version",
        type=int,
        help="sample with this adapter version of the run (0: the warm start) instead",
    )
    p.add_argument("--adapter", help="sample with this LoRA adapter folder instead")
    p.add_argument(
        "--calls",
        action="store_true",
        help="group the slots into the driver's generation calls (generation.batch_size "
        "prompts, every call's targets taken before any answer is admitted) instead of "
        "each slot alone after the one before was admitted",
    )
    p.add_argument(
        "--no-siblings",
        action="store_true",
        help="answers of one call do not learn of each other (lookup.tell_siblings off: "
        "the code before it, for an A/B within one checkout)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a generation config field for this replay (YAML value), e.g. redraw_full=true "
        "for the A/B of whole programs' line redraws; repeatable",
    )
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "llmnas-replay-bench"))
    args = p.parse_args()
    report = replay(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"replay-{report['run']}-c{args.cycle}.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in report.items() if k != "rows"}, indent=2))


if __name__ == "__main__":
    main()
