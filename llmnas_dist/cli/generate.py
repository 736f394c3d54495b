"""`llmnas generate`: sample K proposals for a parent program and admit each one.

    llmnas generate --parent PROGRAM.py [--n K] [--mode delta|full]
                    [--adapter DIR | --base-model] [--dataset NAME] [--score S] [--seed N]
                    [--json]

A user's window on what the model proposes: every answer is printed with its admission
verdict (the full pipeline, sandboxed build included). The parent itself counts as
archived, so an answer that reproduces it is a duplicate. Without --adapter it samples with
the warm-start adapter a run cached for this config (the base model writes almost no
usable delta), else with the base model; the first line says which. Exit status 0 when at least one
proposal was admitted, 1 when none was, 2 on bad usage.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from llmnas_dist.admission.finished import NEAR_PARENT, AnswerTarget
from llmnas_dist.admission.grammar import answer_grammar
from llmnas_dist.admission.novelty import minhash
from llmnas_dist.admission.pipeline import Admission, Verdict
from llmnas_dist.cli.check import archive_index
from llmnas_dist.cli.common import EXIT_FAILED, EXIT_OK, config_from_args, with_input_flags
from llmnas_dist.config import Config
from llmnas_dist.errors import CandidateRejected, UsageError
from llmnas_dist.evaluation.datasets import DatasetSpec, dataset_spec
from llmnas_dist.generation.engine import GenerationResult, adapter_rank, make_generator
from llmnas_dist.generation.prompts import parent_prompt
from llmnas_dist.generation.sampling import Sampling
from llmnas_dist.generation.warmstart import cached_warm_start
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import seed_population

MAX_N = 1000


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "generate",
        parents=[common],
        help="sample LLM proposals for a parent program and show each admission verdict",
        description="Ask the configured LLM for K proposals (deltas or full programs) for "
        "PARENT and run admission on each. Exit status: 0 some admitted, 1 none, 2 bad usage.",
    )
    p.add_argument("--parent", required=True, metavar="PROGRAM.py", help="the parent program")
    p.add_argument("--n", type=int, default=4, metavar="K", help="proposals to sample (default 4)")
    p.add_argument("--mode", choices=("delta", "full"), default="delta", help="answer format")
    which = p.add_mutually_exclusive_group()
    which.add_argument(
        "--adapter",
        metavar="DIR",
        help="LoRA adapter folder to sample with (default: the cached warm-start adapter)",
    )
    which.add_argument(
        "--base-model", action="store_true", help="sample with the base model, no adapter"
    )
    p.add_argument("--dataset", metavar="NAME", help="dataset to build for (default: ce.dataset)")
    p.add_argument("--score", type=float, help="the parent's score, shown in the prompt")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--json", action="store_true", help="print a JSON list of proposals")
    p.set_defaults(func=generate_proposals)


def _target(config: Config, spec: DatasetSpec, near: bytes, mode: str) -> AnswerTarget | None:
    """What an answer must meet before it is returned, as in a run (generation.redraw_builds):
    build for the dataset, differ from the archived programs near the parent (`near`)."""
    if not config.generation.built(mode):
        return None
    return AnswerTarget(spec.in_shape, spec.num_classes, config.admission, near)


def _read_parent(path: str) -> str:
    p = Path(path)
    if not p.is_file():
        raise UsageError(f"parent program not found: {path}")
    try:
        return p.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read parent program {path}: {exc}") from None


def _proposal(result: GenerationResult, verdict: Verdict, mode: str) -> dict[str, object]:
    return {
        "text": result.text,
        "verdict": "admitted" if verdict.admitted else "rejected",
        "error_class": verdict.error_class.value if verdict.error_class else None,
        "message": verdict.message,
        "mode": mode,
        "code_hash": verdict.code_hash,
        "param_count": verdict.param_count,
        "prompt_tokens": result.prompt_tokens,
        "output_tokens": result.output_tokens,
        "seconds": round(result.seconds, 3),
        "constrained": result.constrained,
    }


def _print_text(proposals: list[dict[str, object]]) -> None:
    for i, p in enumerate(proposals, 1):
        head = "admitted" if p["verdict"] == "admitted" else f"rejected: {p['error_class']}"
        how = "constrained" if p["constrained"] else "unconstrained"
        print(f"=== proposal {i}/{len(proposals)} ({p['mode']}, {how}): {head}")
        if p["message"]:
            print(f"  message: {p['message']}")
        print(str(p["text"]).rstrip())
    admitted = sum(p["verdict"] == "admitted" for p in proposals)
    print(f"=== {admitted} of {len(proposals)} admitted")


def _adapter(args: argparse.Namespace, config: Config, dataset: str) -> str | None:
    """--adapter, else the cached warm-start adapter of this config, else none; said on
    stderr so that --json output stays one JSON document."""
    if args.adapter or args.base_model:
        return args.adapter
    cached = (
        cached_warm_start(
            config.generation,
            config.finetune,
            config.admission,
            dataset,
            seeds=seed_population(config.ce),
            input_size=config.evaluation.input_size,
        )
        if config.generation.warm_start
        else None
    )
    if cached is None:
        print(
            "sampling with the base model: no warm-start adapter is cached for this config "
            "(`llmnas run` trains it)",
            file=sys.stderr,
        )
        return None
    print(f"sampling with the cached warm-start adapter {cached}", file=sys.stderr)
    return str(cached)


def generate_proposals(args: argparse.Namespace) -> int:
    config = with_input_flags(config_from_args(args), args)
    if not 1 <= args.n <= MAX_N:
        raise UsageError(f"--n must be between 1 and {MAX_N}, got {args.n}")
    if args.adapter and not (Path(args.adapter) / "adapter_config.json").is_file():
        raise UsageError(f"not a LoRA adapter folder (no adapter_config.json): {args.adapter}")
    parent = _read_parent(args.parent)
    spec = dataset_spec(args.dataset or config.ce.dataset).at_size(config.evaluation.input_size)
    try:
        canonical, parent_hash = canonicalize(parent, config.admission)
    except CandidateRejected as exc:
        raise UsageError(f"the parent is not a valid program: {exc}") from None
    index, _ = archive_index(config)
    index.add(
        parent_hash, minhash(canonical, config.admission.num_perm, config.admission.shingle_size)
    )
    admission = Admission(config.admission, spec, index)

    adapter = _adapter(args, config, spec.name)
    # an adapter trained elsewhere may have a higher rank than this config's fine-tuner
    rank = max(config.finetune.r, adapter_rank(adapter) if adapter else 1)
    generator = make_generator(config.generation, max_lora_rank=rank)
    # the run shows parents as archived, in canonical form: so does this command
    prompt = parent_prompt(args.mode, canonical, spec, args.score)
    sampling = Sampling.from_config(config.generation, seed=args.seed, mode=args.mode)
    grammar, why_not = (
        answer_grammar(args.mode, canonical) if config.generation.constrained else (None, None)
    )
    results = generator.generate(
        [prompt] * args.n,
        sampling,
        adapter=adapter,
        grammars=[grammar] * args.n,
        parents=[canonical] * args.n,
        targets=[_target(config, spec, index.neighbourhood(parent_hash, NEAR_PARENT), args.mode)]
        * args.n,
    )
    proposals = [
        _proposal(
            r,
            admission.admit(r.text, args.mode, canonical, r.error, note=r.grammar_note or why_not),
            args.mode,
        )
        for r in results
    ]
    if args.json:
        print(json.dumps(proposals, indent=2))
    else:
        _print_text(proposals)
    return EXIT_OK if any(p["verdict"] == "admitted" for p in proposals) else EXIT_FAILED
