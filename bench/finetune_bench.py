"""LoRA training benchmarks: the CE update's prompt gradient, the warm start's LoRA layers.

    python bench/finetune_bench.py [gradient] [--elites 5] [--threads 2] [--out DIR]
    python bench/finetune_bench.py layers [--lora-layers 15] [--epochs 2] [--threads 2]

`layers` trains the default run's warm start (its examples, without the sandboxed build of
each child; its rate, schedule and epochs) twice from the same seed: LoRA on every decoder
layer (the baseline) and on the last `--lora-layers` only. Per arm: wall time, steps, first
and mean loss of the last epoch; and the ratio of wall times.

`gradient` (the default):

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
from typing import Any

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


def _arm(meta: Any) -> dict:
    return {
        "seconds": meta.seconds,
        "steps": meta.steps,
        "first_loss": meta.first_loss,
        "train_loss": meta.train_loss,
    }


def layers(args: argparse.Namespace, work: Path) -> dict:
    """The warm start trained with LoRA on every layer, then on the last `--lora-layers`."""
    from llmnas_dist.config import load_config
    from llmnas_dist.generation.finetune import train_lora
    from llmnas_dist.generation.warmstart import warm_start_examples
    from llmnas_dist.seeds import load_seeds

    cfg = load_config()
    gen = cfg.generation
    examples = warm_start_examples(
        gen, cfg.admission, cfg.ce.dataset, load_seeds(), build=False,
        input_size=cfg.evaluation.input_size,
    )  # fmt: skip
    report: dict = {"examples": len(examples), "threads": args.threads, "epochs": args.epochs}
    for n in (None, args.lora_layers):
        meta = train_lora(
            gen.model,
            examples,
            cfg.finetune.model_copy(update={"lora_layers": n}),
            work / f"layers-{n or 'all'}",
            lr=gen.warm_start_lr,
            epochs=args.epochs,
            schedule="linear",
            prompt_grad=False,
            share_prompts=True,
        )
        report[f"layers_{n or 'all'}"] = _arm(meta)
        print(n, report[f"layers_{n or 'all'}"], flush=True)
    report["last_over_all_seconds"] = (
        report[f"layers_{args.lora_layers}"]["seconds"] / report["layers_all"]["seconds"]
    )
    return report


def gradient(args: argparse.Namespace, work: Path) -> dict:
    """One CE update with the whole gradient, then with the gradient stopped at the prompt."""
    from llmnas_dist.config import load_config
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.generation.finetune import build_examples, train_lora

    cfg = load_config()
    spec = dataset_spec(cfg.ce.dataset).at_size(cfg.evaluation.input_size)
    examples = build_examples(elite_pairs(args.elites), spec, cfg.finetune.full_code_fraction)
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
        arm = _arm(meta)
        report["whole_gradient" if prompt_grad else "prompt_stopped"] = arm
        print(prompt_grad, arm, flush=True)
    report["stopped_over_whole_seconds"] = (
        report["prompt_stopped"]["seconds"] / report["whole_gradient"]["seconds"]
    )
    return report


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", nargs="?", choices=("gradient", "layers"), default="gradient")
    p.add_argument("--elites", type=int, default=5, help="gradient: elite pairs")
    p.add_argument("--lora-layers", type=int, default=15, help="layers: the last N layers")
    p.add_argument("--epochs", type=int, default=2, help="layers: warm-start epochs")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "llmnas-finetune-bench"))
    args = p.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    work = Path(tempfile.mkdtemp(prefix="arms-", dir=Path(args.out).parent))
    report = (layers if args.part == "layers" else gradient)(args, work)
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / f"{args.part}.json").write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
