"""CE-update benchmark: one cycle's LoRA fine-tune with and without the prompt's gradient.

    python bench/finetune_bench.py [--elites 5] [--threads 2] [--out DIR]

The elites are what a default run's E_t holds after its first cycle: `--elites` (parent,
child) pairs with distinct parents, made by the warm start's block operators from the
shipped seeds (canonical form, as the archive stores them), a `full_code_fraction` share
taught as whole programs, exactly as `workers.finetuner` builds them. Both arms train the
same examples from the same seed with the default `finetune` config (batches by length),
`prompt_grad` True (the baseline: the whole gradient, activations recomputed) and False
(the gradient stops at the prompt). Per arm: wall time, steps, first and mean loss; and
the ratio of wall times. torch runs on `--threads` threads, as the fine-tuning actor does
(`workers.threads.node_threads`: every core while it runs alone).
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def elite_pairs(n: int) -> list:
    """`n` (parent, child) pairs with distinct parents, children from the block operators."""
    from llmnas_dist.config import load_config
    from llmnas_dist.generation.finetune import ElitePair
    from llmnas_dist.generation.mutations import BLOCK_OPERATORS, warm_start_pairs
    from llmnas_dist.program.static import canonicalize
    from llmnas_dist.seeds import load_seeds

    cfg = load_config()
    seeds = {k: canonicalize(v, cfg.admission)[0] for k, v in sorted(load_seeds().items())}
    pairs = warm_start_pairs(
        seeds,
        1,
        random.Random(0),
        reverse_fraction=0.0,
        cfg=cfg.admission,
        operators=BLOCK_OPERATORS,
    )
    rng = random.Random(1)
    chosen = rng.sample(pairs, n)
    return [ElitePair(p.parent, p.child, rng.uniform(0.8, 0.9)) for p in chosen]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--elites", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "llmnas-finetune-bench"))
    args = p.parse_args()

    import torch

    from llmnas_dist.config import load_config
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.generation.finetune import build_examples, train_lora

    torch.set_num_threads(args.threads)
    cfg = load_config()
    spec = dataset_spec(cfg.ce.dataset).at_size(cfg.evaluation.input_size)
    examples = build_examples(elite_pairs(args.elites), spec, cfg.finetune.full_code_fraction)
    work = Path(tempfile.mkdtemp(prefix="arms-", dir=Path(args.out).parent))
    report: dict = {"examples": len(examples), "threads": args.threads}
    for prompt_grad in (True, False):
        meta = train_lora(
            cfg.generation.model,
            examples,
            cfg.finetune,
            work / f"prompt-grad-{prompt_grad}",
            seed=0,
            prompt_grad=prompt_grad,
        )
        arm = {
            "seconds": meta.seconds,
            "steps": meta.steps,
            "first_loss": meta.first_loss,
            "train_loss": meta.train_loss,
        }
        report["whole_gradient" if prompt_grad else "prompt_stopped"] = arm
        print(prompt_grad, arm, flush=True)
    report["stopped_over_whole_seconds"] = (
        report["prompt_stopped"]["seconds"] / report["whole_gradient"]["seconds"]
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "finetune.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
