"""The warm start (theta_0): a LoRA adapter that teaches the base model the delta format
before cycle 1.

The training set is (parent prompt -> delta) pairs built from the seed programs by the
mutation operators (`mutations.warm_start_pairs`): every child passes the static checks, a
sandboxed build for the run's dataset, and is far enough from its parent to pass novelty.
The adapter has the fine-tuning config's LoRA shape (rank, alpha, dropout, target modules),
so the first CE adapter can continue from it (`train_lora(init_adapter=...)`); learning
rate and epochs are the warm start's own (`generation.warm_start_*`).

Training takes minutes on a CPU, so the adapter is cached under the models cache, keyed by
a hash of everything that determines it: the model, the LoRA fields, the warm-start
fields, the admission settings (they decide which children are kept), the dataset, the
seed programs' text, the delta prompt template and a format version. It is trained into a
staging folder and renamed into place, so a killed process never leaves a half adapter
that a later call would take for a cached one.

The default configuration's adapter also ships inside the package (`warm_starts/`, written by
`deploy/ship_warm_start.py`), so a first run installs it into the cache instead of training
it; a test holds the shipped key to the default config's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from llmnas_dist.config import AdmissionConfig, FinetuneConfig, GenerationConfig
from llmnas_dist.errors import CandidateRejected
from llmnas_dist.evaluation.datasets import DatasetSpec, dataset_spec
from llmnas_dist.generation.finetune import (
    METADATA_FILE,
    ElitePair,
    Example,
    TrainStep,
    build_examples,
    read_metadata,
    train_lora,
)
from llmnas_dist.generation.models import cache_root
from llmnas_dist.generation.mutations import warm_start_pairs
from llmnas_dist.generation.prompts import load_template
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import load_seeds

log = logging.getLogger(__name__)

# bump when the examples change in a way the key's inputs do not show (answer format,
# scores in prompts), so stale adapters are never reused; the operators are in the key
FORMAT_VERSION = 8  # 8: operators in the key; 7: a second generation; 6: frozen weights in bf16
ADAPTERS_DIR = "adapters"
PAIR_SEED = 0  # the mutation draw and the training order are fixed: same key, same adapter
# A share of the pairs mutates a seed's child (`warm_start_pairs`' second generation): from
# cycle 2 on, the parents are children holding a taught block, and a warm start taught on
# seeds alone proposes that block again (bench/replay_bench.py, 2026-12-05: the warm-start
# adapter on the cycle-3 parents of a default run, 10 of 15 deltas not novel)
SECOND_GENERATION = 0.375
# The edits taught: block insertions at anchors every program has (super().__init__(), the
# classifier, the top of forward), never reversed, and not the one that lowers the default's
# proxy score: a child scored below its parent cannot raise the elite mean, and the model
# proposes what it was taught (a default run of 2026-12-06: 6 of 9 evaluated children below
# their parent). bench/operator_bench.py (2026-12-06, 2-core Xeon, mnist5k at 8 px, 1 epoch;
# the 6 best seeds as parents, distinct children by one operator in three draws, parent and
# child trained with seeds 0 and 1, child minus parent, mean +- standard error): mlp_head
# -0.044 +- 0.009 (0 of 12 children above their parent): left out; add_input_gate -0.011 +-
# 0.006 (3 of 12), add_residual_block -0.003 +- 0.005 (4 of 12), add_post_block -0.003 +-
# 0.007 (2 of 7), add_input_norm +0.001 +- 0.004 (4 of 6, in its place), swap_activation
# +0.003 +- 0.004 (10 of 17). The set must stay varied: taught residual and post blocks,
# input norms and swaps instead (a swap alone is rarely novel, and post blocks often do not
# build, so 3 in 5 pairs added the residual block), a first run (2026-12-06) proposed
# `self.pre_block` in all 14 deltas and admitted 6 of 24 (1 of 16 in cycles 2 and 3, the
# rest near-copies), against 9 of 24 with the four blocks of before. Tried for a proxy gain
# and not kept (same bench, 2026-12-06, 2-core AVX512-BF16 Xeon): the input upsampled 2x
# -0.053 +- 0.007 (0 of 6 above), a learned 2x upsampling block -0.080 +- 0.009 (0 of 12),
# dropout 0 +0.000 (2), a linear classifier on the pixels added to the logits -0.006 +- 0.011
# (3 of 5, training seeds 0-2); widen_channels +0.003 +- 0.015 (2 of 3) again.
# Tried and not kept (2026-12-06, 2-core AVX2 EPYC): the input gate replaced by two blocks
# on the feature map, anchored as the post block is, a squeeze-and-excitation gate and a
# residual depthwise-separable block (a first run's cycle 3 had proposed `self.input_gate`
# again in 3 of its 4 near-copies; a replay of that cycle, bench/replay_bench.py --samples 4,
# admitted 8 of 20, 11 not novel). Same operator bench, 6 parents: depthwise -0.000 +- 0.004
# (4 of 6 above their parent), gate -0.001 +- 0.005 (2 of 6), add_post_block -0.003 +- 0.006
# (2 of 6). Its adapter (99 pairs: the feature blocks do not build on every seed; trained in
# 483 s) admitted 7 of 24 in a default first run (deltas 7 of 14, whole programs 0 of 10, 5
# cut off at the token limit; 15 and 16 `repeat` redraws of one answer in cycles 2 and 3)
# against 12 of 24 (9 of 14, 3 of 10) with these four, one run each
# Since 2026-12-07 the set also holds the first edit measured to raise the proxy score,
# swap_all_activations: every activation of the program swapped for GELU, SiLU or
# LeakyReLU/ELU. Same bench that day (2-core AVX512-BF16 EPYC, the 6 best seeds, 3 children
# each, training seeds 0 and 1): +0.011 +- 0.003 (15 of 18 children above their parent),
# against +0.005 +- 0.002 (14 of 18) for swap_activation (one activation) in the same
# session. Alone it is rarely novel (Jaccard 0.88-0.98 to its parent on the seeds), so it is
# stacked on a block or an input norm (`novel_mutation`). Tried that day and not kept:
# keep_resolution (one downsampling step off) -0.045 +- 0.016 (0 of 11 above), and a
# side-aware downsampling gate halved (`side >= 4` -> `side >= 2`) -0.001 +- 0.001 (0 of
# 13: at 8 px most such gates are already off)
WARM_START_OPERATORS = (
    "add_residual_block",
    "add_input_gate",
    "add_post_block",
    "add_input_norm",
    "swap_all_activations",
)
# Training the default's adapter took 840 s of a 2-core AVX512-BF16 Xeon's first run
# (2026-12-06: 100 steps, about a third of the run) and 885 s on an AVX2 EPYC; shipped, a
# first run copies 7 MB instead. Another configuration (key) trains as before.
SHIPPED_ROOT = Path(__file__).resolve().parent / "warm_starts"
UNSCORED_FRACTION = 0.25  # share of prompts whose parent has no score yet (cycle-0 seeds)
STALE_STAGING_S = 6 * 3600  # a staging folder this old belongs to a killed process


@dataclass(frozen=True)
class WarmStart:
    """The warm-start adapter: where it is, whether this call found it cached, and what it
    was trained on. `seconds` is this call's wall time (well under a second when cached)."""

    path: str
    cached: bool
    n_examples: int
    train_loss: float
    seconds: float
    key: str


def warm_start_key(
    generation: GenerationConfig,
    finetune: FinetuneConfig,
    admission: AdmissionConfig,
    dataset: str,
    seeds: Mapping[str, str],
    input_size: int | None = None,
) -> str:
    """sha256 over everything that determines the adapter."""
    inputs: dict[str, object] = {
        "format": FORMAT_VERSION,
        "model": generation.model,
        "lora": finetune.model_dump(
            mode="json",
            include={
                "r",
                "alpha",
                "dropout",
                "target_modules",
                "lora_layers",
                "batch_size",
                "max_length",
            },
        ),
        "warm_start": {
            "per_seed": generation.warm_start_per_seed,
            "epochs": generation.warm_start_epochs,
            "lr": generation.warm_start_lr,
            "full_fraction": generation.warm_start_full_fraction,
            "operators": WARM_START_OPERATORS,
            "second_generation": SECOND_GENERATION,
        },
        # the codec's fuzz judges answers, not the taught pairs (built with exact deltas)
        "admission": admission.model_dump(mode="json", exclude={"delta_fuzz"}),
        "dataset": dataset,
        "seeds": sorted(seeds.items()),
        "prompt": [load_template("delta").template, load_template("full").template],
    }
    if input_size is not None:  # absent by default: the default run keeps its cached adapter
        inputs["input_size"] = input_size
    blob = json.dumps(inputs, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()


def builds_for(spec: DatasetSpec, admission: AdmissionConfig) -> Callable[[str], bool]:
    """A sandboxed build of a child for the run's dataset, as admission does it."""
    from llmnas_dist.admission.build import build_check

    def builds(child: str) -> bool:
        try:
            build_check(child, spec.in_shape, spec.num_classes, admission)
        except CandidateRejected:
            return False
        return True

    return builds


def warm_start_examples(
    generation: GenerationConfig,
    admission: AdmissionConfig,
    dataset: str,
    seeds: Mapping[str, str],
    build: bool = True,
    input_size: int | None = None,
) -> list[Example]:
    """Examples from mutation pairs of `seeds`: (delta prompt -> delta), and for a
    `generation.warm_start_full_fraction` share (full prompt -> the whole child).
    Programs are shown in canonical form, as the archive stores them and the driver's
    prompts show parents; each parent gets a random plausible score (or none), as prompts
    in a run carry them. Children are built at the run's shape (`input_size`)."""
    spec = dataset_spec(dataset).at_size(input_size)
    rng = random.Random(PAIR_SEED)
    canonical = {name: canonicalize(code, admission)[0] for name, code in seeds.items()}
    builds = builds_for(spec, admission) if build else None
    # Never reversed: a small model taught removals starts "removing" blocks the parent
    # does not have (seen on held-out parents). Against all operators the valid-delta rate
    # of block insertions was the same within noise (6/24 vs 7/24). The CE cycles teach the
    # other edits from elites.
    pairs = warm_start_pairs(
        canonical,
        generation.warm_start_per_seed,
        rng,
        builds=builds,
        reverse_fraction=0.0,
        cfg=admission,
        operators=WARM_START_OPERATORS,
        second_fraction=SECOND_GENERATION,
    )
    taught, scores = [], {}
    for pair in pairs:
        parent, child = (canonicalize(c, admission)[0] for c in (pair.parent, pair.child))
        if parent == child:
            continue
        # one score per parent: its examples share one prompt, which training runs once
        if parent not in scores:
            scores[parent] = None if rng.random() < UNSCORED_FRACTION else rng.uniform(0.2, 0.97)
        taught.append(ElitePair(parent, child, scores[parent]))
    return build_examples(taught, spec, generation.warm_start_full_fraction, seed=PAIR_SEED)


def _adapter_root(cache: Path | None) -> Path:
    return (cache or cache_root()) / ADAPTERS_DIR


def _cached(folder: Path, key: str, started: float) -> WarmStart:
    meta = read_metadata(folder)
    return WarmStart(
        path=str(folder),
        cached=True,
        n_examples=int(meta["examples"]),
        train_loss=float(meta["train_loss"]),
        seconds=time.perf_counter() - started,
        key=key,
    )


def _point_metadata_at(adapter: Path, final: Path) -> None:
    """The metadata names the folder the adapter will live in, written before the rename."""
    meta_path = adapter / METADATA_FILE
    meta = json.loads(meta_path.read_text())
    meta["adapter_dir"] = str(final.resolve())
    meta_path.write_text(json.dumps(meta, indent=2) + "\n")


def _remove_stale_staging(root: Path) -> None:
    """Staging folders left by killed processes (old enough that none is still training)."""
    for entry in root.glob(".warm-start-*"):
        try:
            if time.time() - entry.stat().st_mtime > STALE_STAGING_S:
                shutil.rmtree(entry, ignore_errors=True)
        except OSError:
            continue


def _folder(key: str, cache: Path | None) -> Path:
    return _adapter_root(cache) / f"warm-start-{key[:24]}"


def _move_into_place(adapter: Path, final: Path) -> None:
    """Rename a complete adapter folder to `final` (its metadata pointed there first)."""
    _point_metadata_at(adapter, final)
    try:
        adapter.rename(final)
    except OSError:
        if not (final / "adapter_config.json").is_file():
            raise
        # another process cached the same adapter first; its copy is as good as ours


def _install_shipped(key: str, final: Path, shipped: Path | None) -> bool:
    """Copy the adapter shipped for `key` (if any) into the cache at `final`."""
    source = shipped / final.name if shipped is not None else None
    if source is None or not (source / "adapter_config.json").is_file():
        return False
    if read_metadata(source).get("key") != key:
        return False
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".warm-start-", dir=final.parent))
    try:
        shutil.copytree(source, staging / "adapter")
        _move_into_place(staging / "adapter", final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    log.info("warm start: installed the shipped adapter %s", source.name)
    return True


def ship_warm_start(adapter: Path, key: str, model: str, root: Path = SHIPPED_ROOT) -> Path:
    """Copy a trained warm-start adapter into the package as the one shipped for `key`,
    without this machine's paths (the base model by name; the install fills in the folder).
    It replaces every adapter shipped before: only the default configuration's ships."""
    root.mkdir(parents=True, exist_ok=True)
    dest = root / f"warm-start-{key[:24]}"
    staging = Path(tempfile.mkdtemp(prefix=".ship-", dir=root))
    try:
        shutil.copy2(adapter / "adapter_model.safetensors", staging)
        config = json.loads((adapter / "adapter_config.json").read_text())
        config["base_model_name_or_path"] = model
        (staging / "adapter_config.json").write_text(json.dumps(config, indent=2) + "\n")
        meta = {**read_metadata(adapter), "adapter_dir": None, "base_model_path": None}
        (staging / METADATA_FILE).write_text(json.dumps({**meta, "key": key}, indent=2) + "\n")
        for old in root.glob("warm-start-*"):
            shutil.rmtree(old)
        staging.chmod(0o755)  # mkdtemp made it private
        staging.rename(dest)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def cached_warm_start(
    generation: GenerationConfig,
    finetune: FinetuneConfig,
    admission: AdmissionConfig,
    dataset: str,
    cache: Path | None = None,
    seeds: Mapping[str, str] | None = None,
    input_size: int | None = None,
    shipped: Path | None = SHIPPED_ROOT,
) -> Path | None:
    """The folder of this configuration's warm-start adapter when a run has cached it or
    the package ships it (on the shipped seeds unless `seeds` is given), else None;
    nothing is trained."""
    seeds = load_seeds() if seeds is None else seeds
    key = warm_start_key(generation, finetune, admission, dataset, seeds, input_size)
    folder = _folder(key, cache)
    if (folder / "adapter_config.json").is_file() or _install_shipped(key, folder, shipped):
        return folder
    return None


def warm_start_adapter(
    generation: GenerationConfig,
    finetune: FinetuneConfig,
    admission: AdmissionConfig,
    dataset: str,
    cache: Path | None = None,
    seeds: Mapping[str, str] | None = None,
    input_size: int | None = None,
    on_step: Callable[[TrainStep], None] | None = None,
    shipped: Path | None = SHIPPED_ROOT,
) -> WarmStart:
    """The warm-start adapter for this configuration: the cached one, the one the package
    ships (installed into the cache), or trained now (on the shipped seeds unless `seeds`
    is given, children built at `input_size`) and cached; `on_step` hears each training
    step."""
    started = time.perf_counter()
    seeds = load_seeds() if seeds is None else dict(seeds)
    if not seeds:
        raise ValueError("the warm start needs at least one seed program")
    key = warm_start_key(generation, finetune, admission, dataset, seeds, input_size)
    root = _adapter_root(cache)
    final = _folder(key, cache)
    if (final / "adapter_config.json").is_file() or _install_shipped(key, final, shipped):
        return _cached(final, key, started)
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(root)
    examples = warm_start_examples(
        generation,
        admission,
        dataset,
        seeds,
        input_size=input_size,
    )
    if not examples:
        raise ValueError("no mutation of the seed programs passed admission; nothing to train on")
    log.info("warm start: %d examples from %d seeds", len(examples), len(seeds))
    staging = Path(tempfile.mkdtemp(prefix=".warm-start-", dir=root))
    try:
        result = train_lora(
            generation.model,
            examples,
            finetune,
            staging / "adapter",
            seed=PAIR_SEED,
            version=0,
            lr=generation.warm_start_lr,
            epochs=generation.warm_start_epochs,
            schedule="linear",
            prompt_grad=False,  # twice the examples in the same minutes
            share_prompts=True,  # a parent's children in one batch: its prompt runs once
            on_step=on_step,
        )
        _move_into_place(staging / "adapter", final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return WarmStart(
        path=str(final),
        cached=False,
        n_examples=result.examples,
        train_loss=result.train_loss,
        seconds=time.perf_counter() - started,
        key=key,
    )
