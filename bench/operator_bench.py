"""Which mutation operators raise the proxy score on the default dataset?

    python bench/operator_bench.py [--parents 6] [--children 2] [--seeds 0 1]
        [--operators swap_activation widen_channels ...] [--workers 2] [--out DIR]

Why: the warm start teaches the model the edits of `generation.mutations` (its operator
set, `warmstart.py`), and a CE cycle's children regress below their parents when those
edits do not help at the proxy's budget (default run of 2026-12-06: 6 of 8 evaluated
children scored below their parent). This bench measures each operator's effect: every seed
is evaluated first (training seed 0) and the best `--parents` kept; each operator is applied
to each of them `--children` times (distinct children that pass the static checks and
build), and parent and child are trained with the same `--seeds` (a paired difference, the
training seed's noise shared). Per operator: children, mean and standard error of child
minus parent (each averaged over the seeds), children above their parent. Evaluations run
`--workers` at a time in their sandboxes, as the default run's evaluators do.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def children_of(parent: str, operator: str, n: int, rng: random.Random, builds) -> list[str]:
    """Up to `n` distinct children of `parent` by `operator` alone (static checks and build
    passed); fewer where the operator does not apply."""
    from llmnas_dist.generation.mutations import mutate

    out: list[str] = []
    for _ in range(4 * n):
        if len(out) >= n:
            break
        m = mutate(parent, rng, [operator])
        if m is not None and m.child not in out and builds(m.child):
            out.append(m.child)
    return out


def paired_effects(parent_scores: dict, child_rows: list[dict]) -> dict:
    """Per operator: n, mean and standard error of child minus parent, children above."""
    by_op: dict[str, list[float]] = {}
    for row in child_rows:
        if row["score"] is None or parent_scores.get(row["parent"]) is None:
            continue
        by_op.setdefault(row["operator"], []).append(row["score"] - parent_scores[row["parent"]])
    out = {}
    for op, diffs in sorted(by_op.items()):
        se = statistics.stdev(diffs) / len(diffs) ** 0.5 if len(diffs) > 1 else None
        out[op] = {
            "n": len(diffs),
            "mean_diff": statistics.fmean(diffs),
            "se": se,
            "above_parent": sum(d > 0 for d in diffs),
        }
    return out


def main() -> None:
    from llmnas_dist.config import load_config
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.evaluation.evaluate import evaluate_program
    from llmnas_dist.evaluation.recipe import Recipe
    from llmnas_dist.generation.mutations import OPERATORS
    from llmnas_dist.generation.warmstart import builds_for
    from llmnas_dist.sandbox.runner import SandboxLimits
    from llmnas_dist.seeds import load_seeds

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--parents", type=int, default=6, help="best seeds used as parents")
    p.add_argument("--children", type=int, default=2, help="children per operator and parent")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--operators", nargs="+", default=list(OPERATORS), choices=list(OPERATORS))
    p.add_argument("--workers", type=int, default=2, help="evaluations at once")
    p.add_argument("--rng", type=int, default=0, help="the operators' random seed")
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "llmnas-operator-bench"))
    args = p.parse_args()

    cfg = load_config()
    spec = dataset_spec(cfg.ce.dataset).at_size(cfg.evaluation.input_size)
    limits = SandboxLimits.from_evaluation(cfg.evaluation)

    builds = builds_for(spec, cfg.admission)

    def score(code: str, seed: int) -> float | None:
        recipe = Recipe.from_config(cfg.evaluation, seed=seed)
        return evaluate_program(
            code, cfg.ce.dataset, recipe, limits, admission=cfg.admission
        ).accuracy

    def mean_score(code: str) -> float | None:
        scores = [score(code, s) for s in args.seeds]
        return None if None in scores else statistics.fmean(scores)  # type: ignore[arg-type]

    seeds = load_seeds()
    with ThreadPoolExecutor(args.workers) as pool:
        first = dict(
            zip(seeds, pool.map(lambda c: score(c, args.seeds[0]), seeds.values()), strict=True)
        )
        ranked = sorted((n for n in seeds if first[n] is not None), key=lambda n: -first[n])
        parents = ranked[: args.parents]
        print(json.dumps({"seed_scores": first, "parents": parents}), flush=True)
        rng = random.Random(args.rng)
        rows = [
            {"parent": name, "operator": op, "code": child}
            for name in parents
            for op in args.operators
            for child in children_of(seeds[name], op, args.children, rng, builds)
        ]
        parent_scores = dict(
            zip(parents, pool.map(lambda n: mean_score(seeds[n]), parents), strict=True)
        )
        for row, s in zip(rows, pool.map(lambda r: mean_score(r["code"]), rows), strict=True):
            row["score"] = s
            print(json.dumps({k: v for k, v in row.items() if k != "code"}), flush=True)
    report = {
        "dataset": cfg.ce.dataset,
        "input_size": cfg.evaluation.input_size,
        "epochs": cfg.evaluation.epochs,
        "training_seeds": args.seeds,
        "parent_scores": parent_scores,
        "effects": paired_effects(parent_scores, rows),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "operators.json").write_text(json.dumps({**report, "rows": rows}, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
