"""LoRA fine-tuning on (prompt -> completion) pairs: the CE update and the warm start.

Maximum likelihood of the elite answers given their prompts, with the loss on completion
tokens only: the prompt is context the model is not asked to reproduce. Every example is
the chat-formatted prompt exactly as `generation.chat_text` renders it for sampling,
followed by the answer and the end-of-turn token, so what is trained is what is sampled.
The result is a peft adapter folder plus a metadata JSON (base model, example count,
train loss, settings) that the archive records.
"""

from __future__ import annotations

import inspect
import json
import logging
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmnas_dist.config import FinetuneConfig
from llmnas_dist.errors import ConfigError
from llmnas_dist.evaluation.datasets import DatasetSpec
from llmnas_dist.generation.engine import chat_text
from llmnas_dist.generation.models import cpu_has_bf16, inference_dtype, resolve_model
from llmnas_dist.generation.prompts import delta_answer, full_answer, parent_prompt, training_delta

log = logging.getLogger(__name__)

METADATA_FILE = "llmnas_adapter.json"
IGNORE = -100  # label value the loss skips
SCHEDULES = ("constant", "linear")
EMBEDDING_MODULES = frozenset({"embed_tokens", "lm_head"})  # the input and output embeddings


@dataclass(frozen=True)
class Example:
    """One supervised pair: the user prompt and the answer the model should give."""

    prompt: str
    completion: str


@dataclass(frozen=True)
class ElitePair:
    """A parent and the elite child proposed from it (scores as the archive has them)."""

    parent: str
    child: str
    parent_score: float | None = None


@dataclass(frozen=True)
class FinetuneResult:
    """What a training run produced (what the fine-tuning actor returns to the driver);
    also written as the adapter's metadata JSON."""

    adapter_dir: str
    base_model: str
    base_model_path: str
    examples: int
    train_loss: float  # mean completion-token loss over the last epoch
    first_loss: float  # mean loss of the first optimizer step (before any update)
    steps: int
    seconds: float
    cut: int = 0  # examples longer than max_length: completion's tail cut, or left out
    version: int | None = None
    init_adapter: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class TrainStep:
    """Where a LoRA training stands after an optimizer step: what a progress line shows."""

    step: int
    total: int
    loss: float
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / self.step * (self.total - self.step) if self.step else 0.0


def build_examples(
    pairs: Sequence[ElitePair],
    dataset: DatasetSpec,
    full_code_fraction: float = 0.2,
    seed: int = 0,
) -> list[Example]:
    """Training examples from (parent, child) pairs: each pair becomes a delta example
    (parent prompt -> diff to the child) or, for a `full_code_fraction` share chosen by a
    seeded draw, a full-code example (parent prompt -> the whole child)."""
    if not 0.0 <= full_code_fraction <= 1.0:
        raise ValueError(f"full_code_fraction must be in [0, 1], got {full_code_fraction}")
    rng = random.Random(seed)
    examples = []
    for pair in pairs:
        if pair.parent == pair.child:
            raise ValueError("an elite pair whose child equals its parent teaches nothing")
        if rng.random() < full_code_fraction:
            prompt = parent_prompt("full", pair.parent, dataset, pair.parent_score)
            examples.append(Example(prompt, full_answer(pair.child)))
        else:
            prompt = parent_prompt("delta", pair.parent, dataset, pair.parent_score)
            examples.append(Example(prompt, delta_answer(training_delta(pair.parent, pair.child))))
    return examples


def encode_example(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion + end-of-turn, and where the completion starts.
    Prompt and completion are tokenized apart so the split is exact (and matches sampling,
    which starts from the prompt's tokens). Too long: cut to max_length (the completion's
    tail goes first)."""
    prompt_ids = tokenizer(chat_text(tokenizer, example.prompt), add_special_tokens=False)[
        "input_ids"
    ]
    answer_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = [*answer_ids, tokenizer.eos_token_id]
    return (prompt_ids + answer_ids)[:max_length], len(prompt_ids)


def _batch(encoded: Sequence[tuple[list[int], int]], pad_id: int) -> dict[str, Any]:
    """Right-padded tensors with labels masked on prompt and padding."""
    import torch

    width = max(len(ids) for ids, _ in encoded)
    input_ids = torch.full((len(encoded), width), pad_id, dtype=torch.long)
    labels = torch.full((len(encoded), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(encoded), width), dtype=torch.long)
    for row, (ids, start) in enumerate(encoded):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        labels[row, start : len(ids)] = torch.tensor(ids[start:])
        mask[row, : len(ids)] = 1
    return {"input_ids": input_ids, "attention_mask": mask, "labels": labels}


def _completion_loss(model: Any, batch: dict[str, Any]) -> Any:
    """Mean next-token loss over completion tokens of the batch (summed per token, so long
    and short answers weigh by their length, as maximum likelihood does). Logits are
    computed only from the first completion position on: the prompt is most of every
    example, and its vocabulary-sized logits would be a fifth of the compute for nothing."""
    import torch.nn.functional as F

    labels = batch["labels"]
    width = labels.shape[1]
    labelled = (labels != IGNORE).any(dim=0).nonzero()
    first = int(labelled[0]) if len(labelled) else width - 1
    keep = min(width, width - first + 1)  # from the position that predicts `first`
    logits = model(
        input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], logits_to_keep=keep
    ).logits
    shifted = logits[:, :-1].float()
    targets = labels[:, width - keep + 1 :]
    return F.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)), targets.reshape(-1), ignore_index=IGNORE
    )


def encode_examples(
    tokenizer: Any, examples: Sequence[Example], max_length: int
) -> tuple[list[tuple[list[int], int]], int]:
    """The encoded examples that keep completion tokens, and how many examples did not fit
    in max_length (cut, or left out when the prompt alone fills it)."""
    # one token over the budget shows an example does not fit, without a second encoding
    encoded = [encode_example(tokenizer, ex, max_length + 1) for ex in examples]
    cut = sum(len(ids) > max_length for ids, _ in encoded)
    kept = [
        (ids[:max_length], start) for ids, start in encoded if min(len(ids), max_length) > start
    ]
    if not kept:
        raise ValueError(
            f"no example has completion tokens within max_length={max_length} "
            f"({len(examples)} examples given)"
        )
    return kept, cut


def mean_nll(model: Any, tokenizer: Any, examples: Sequence[Example], max_length: int) -> float:
    """Mean per-token negative log-likelihood of the completions, averaged over examples."""
    import torch

    was_training = model.training
    model.eval()
    total = 0.0
    encoded, _ = encode_examples(tokenizer, examples, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for item in encoded:
            total += float(_completion_loss(model, _batch([item], pad)))
    model.train(was_training)
    return total / len(encoded)


def _autocast(device: str) -> Any:
    """bf16 autocast on a CPU with native bf16 (measured here: about 1.5x the fp32 training
    throughput); nothing elsewhere (GPU weights are bf16 already)."""
    import contextlib

    import torch

    if device == "cpu" and cpu_has_bf16():
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def load_base(model: str, device: str | None = None) -> tuple[Any, Any, str, str]:
    """(model, tokenizer, resolved path, device): the frozen weights in bf16 on a GPU and on
    a CPU with native bf16, else fp32; the LoRA weights stay fp32 (peft casts them). On a
    2-core AMX CPU bf16 weights took a warm-start step 0.88x the time of fp32 weights under
    the same bf16 autocast, which casts frozen weights again at every call."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = getattr(torch, inference_dtype("auto", device))  # as sampling loads them
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        base: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        base.to(device)
    except OSError as exc:
        raise ConfigError(f"cannot load model {model!r}: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return base, tokenizer, path, device


def _cache_arg(model: Any) -> str:
    """The forward keyword for a key/value cache: `cache` in transformers 5, before that
    `past_key_values`."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "cache" if "cache" in inspect.signature(base.forward).parameters else "past_key_values"


def _shared_prompt_backward(
    model: Any, items: Sequence[tuple[list[int], int]], device: str, n_tokens: int
) -> float:
    """Backward of the completion tokens of examples that share one prompt, the gradient
    stopped at the prompt: the prompt runs once without autograd (adapter active, so its
    keys and values are what sampling sees), its cache is repeated over the batch, and the
    right-padded completions run with autograd. Returns their summed token loss."""
    import torch
    import torch.nn.functional as F

    ids0, start = items[0]
    split = max(1, start - 1)  # the last prompt token predicts the first answer token
    tails = [ids[split:] for ids, _ in items]
    width = max(len(t) for t in tails)
    tokens = torch.zeros((len(items), width), dtype=torch.long)
    targets = torch.full((len(items), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(items), split + width), dtype=torch.long)
    mask[:, :split] = 1
    for row, tail in enumerate(tails):
        tokens[row, : len(tail)] = torch.tensor(tail)
        targets[row, : len(tail)] = torch.tensor(tail)
        mask[row, split : split + len(tail)] = 1
    positions = torch.arange(split, split + width).expand(len(items), -1)
    with _autocast(device):
        with torch.no_grad():
            prefix = model(input_ids=torch.tensor([ids0[:split]], device=device), use_cache=True)
        cache = getattr(prefix, "cache", None) or prefix.past_key_values
        if len(items) > 1:
            cache.batch_repeat_interleave(len(items))
        logits = model(
            input_ids=tokens.to(device),
            attention_mask=mask.to(device),
            position_ids=positions.to(device),
            use_cache=True,
            **{_cache_arg(model): cache},
        ).logits
    shifted = logits[:, :-1].float()
    loss = F.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)),
        targets[:, 1:].reshape(-1).to(device),
        ignore_index=IGNORE,
        reduction="sum",
    )
    (loss / n_tokens).backward()
    return float(loss.item())


def _prompt_cached_backward(
    model: Any, items: Sequence[tuple[list[int], int]], device: str
) -> float:
    """Backward of the batch's mean completion-token loss with the gradient stopped at the
    prompt (`_shared_prompt_backward`, once per distinct prompt in the batch). The prompt
    is most of every example, so this is about twice as fast as the full backward on a
    CPU, and faster again when examples share a prompt (`prompt_batches`); the adapter
    still learns from every completion position, its queries to the prompt included.
    Returns the loss value."""
    n_tokens = sum(len(ids) - start for ids, start in items)
    groups: dict[tuple[int, ...], list[tuple[list[int], int]]] = {}
    for ids, start in items:
        groups.setdefault(tuple(ids[:start]), []).append((ids, start))
    total = sum(_shared_prompt_backward(model, g, device, n_tokens) for g in groups.values())
    return total / n_tokens


def _backward(
    model: Any,
    items: Sequence[tuple[list[int], int]],
    device: str,
    pad_id: int,
    prompt_grad: bool,
) -> float:
    """Backward of one batch's mean completion-token loss; returns the loss value."""
    if not prompt_grad:
        return _prompt_cached_backward(model, items, device)
    batch = _batch(items, pad_id)
    with _autocast(device):
        loss = _completion_loss(model, {k: v.to(device) for k, v in batch.items()})
    loss.backward()
    return float(loss.item())


def length_batches(lengths: Sequence[int], batch_size: int, rng: random.Random) -> list[list[int]]:
    """One epoch's batches: a shuffled order, sorted by length inside windows of eight
    batches so a batch pads little, then the batches shuffled again."""
    order = list(range(len(lengths)))
    rng.shuffle(order)
    window = batch_size * 8
    batches = []
    for i in range(0, len(order), window):
        chunk = sorted(order[i : i + window], key=lambda j: lengths[j])
        batches += [chunk[k : k + batch_size] for k in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def prompt_batches(
    prompts: Sequence[tuple[int, ...]], batch_size: int, rng: random.Random
) -> list[list[int]]:
    """One epoch's batches of examples that share their prompt (up to `batch_size` each),
    in shuffled order: with the gradient stopped at the prompt, a shared prompt runs once
    per batch."""
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, prompt in enumerate(prompts):
        groups.setdefault(prompt, []).append(i)
    batches = []
    for members in groups.values():
        rng.shuffle(members)
        batches += [members[k : k + batch_size] for k in range(0, len(members), batch_size)]
    rng.shuffle(batches)
    return batches


def learning_rate(schedule: str, base: float, step: int, total: int) -> float:
    """The rate at optimizer step `step` (0-based) of `total`: constant, or a linear warm-up
    over the first tenth and a linear decay to zero (what a high LoRA rate needs to end
    on a settled loss)."""
    if schedule == "constant":
        return base
    if schedule != "linear":
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    warmup = max(1, total // 10)
    if step < warmup:
        return base * (step + 1) / warmup
    return base * max(0.0, total - step) / (total - warmup + 1)


def last_layers(base: Any, n: int | None) -> list[int] | None:
    """The indices of `base`'s last `n` decoder layers (None: every layer)."""
    if n is None:
        return None
    total = int(base.config.num_hidden_layers)
    if n > total:
        raise ConfigError(f"finetune.lora_layers is {n}, but the model has {total} layers")
    return list(range(total - n, total))


def _lora_model(base: Any, cfg: FinetuneConfig, init_adapter: str | None) -> Any:
    from peft import LoraConfig, PeftModel, get_peft_model

    if init_adapter is not None:
        if not (Path(init_adapter) / "adapter_config.json").is_file():
            raise ConfigError(f"not a LoRA adapter folder: {init_adapter}")
        return PeftModel.from_pretrained(base, init_adapter, is_trainable=True)
    lora = LoraConfig(
        r=cfg.r,
        lora_alpha=cfg.alpha,
        lora_dropout=cfg.dropout,
        target_modules=list(cfg.target_modules),
        layers_to_transform=last_layers(base, cfg.lora_layers),
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(base, lora)
    except ValueError as exc:  # no module matched target_modules
        raise ConfigError(f"finetune.target_modules {cfg.target_modules}: {exc}") from None


def _epoch_batches(
    encoded: Sequence[tuple[list[int], int]],
    batch_size: int,
    rng: random.Random,
    share_prompts: bool,
) -> list[list[int]]:
    if share_prompts:
        return prompt_batches([tuple(ids[:start]) for ids, start in encoded], batch_size, rng)
    return length_batches([len(ids) for ids, _ in encoded], batch_size, rng)


def train_lora(
    model: str,
    examples: Sequence[Example],
    cfg: FinetuneConfig,
    out_dir: str | Path,
    seed: int = 0,
    init_adapter: str | None = None,
    version: int | None = None,
    device: str | None = None,
    lr: float | None = None,
    epochs: int | None = None,
    schedule: str = "constant",
    prompt_grad: bool = True,
    share_prompts: bool = False,
    on_step: Callable[[TrainStep], None] | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter on `examples` (optionally continuing `init_adapter`) and save it
    with its metadata in `out_dir`, which must not exist yet (adapters are immutable).
    `lr` and `epochs` override the config's (the warm start has its own). With
    `prompt_grad` False the gradient stops at the prompt (`_prompt_cached_backward`):
    same loss, about half the time, a partial gradient. `share_prompts` batches examples
    that share their prompt together (`prompt_batches`; without prompt gradient each
    batch's prompt then runs once), else by length. `on_step` hears every step."""
    import torch

    out = Path(out_dir)
    if out.exists():
        raise ValueError(f"adapter folder {out} already exists; adapters are never overwritten")
    if not examples:
        raise ValueError("no training examples")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
    lr = cfg.lr if lr is None else lr
    epochs = cfg.epochs if epochs is None else epochs
    if lr <= 0 or epochs < 1:
        raise ValueError(f"lr must be positive and epochs at least 1, got {lr} and {epochs}")
    start_time = time.perf_counter()
    torch.manual_seed(seed)
    base, tokenizer, path, device = load_base(model, device)
    if prompt_grad:
        # recompute activations in the backward pass: long code examples otherwise need
        # tens of GB (a 1k-token batch of 4 on the 135M model was OOM-killed at 19 GB);
        # without the prompt's graph the completions alone are small
        base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        base.config.use_cache = False
    peft_model = _lora_model(base, cfg, init_adapter)
    encoded, cut = encode_examples(tokenizer, examples, cfg.max_length)
    if cut:
        log.warning(
            "%d of %d examples are longer than max_length=%d: their completions are cut "
            "(or left out); raise finetune.max_length to train on whole programs",
            cut,
            len(examples),
            cfg.max_length,
        )
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr)
    rng = random.Random(seed)
    peft_model.train()
    steps, first_loss = 0, math.nan
    plans = [_epoch_batches(encoded, cfg.batch_size, rng, share_prompts) for _ in range(epochs)]
    total = sum(len(plan) for plan in plans)
    epoch_losses: list[float] = []
    for plan in plans:
        epoch_losses = []
        for rows in plan:
            optimizer.zero_grad(set_to_none=True)
            items = [encoded[j] for j in rows]
            value = _backward(peft_model, items, device, tokenizer.pad_token_id, prompt_grad)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(schedule, lr, steps, total)
            optimizer.step()
            steps += 1
            epoch_losses.append(value)
            done = TrainStep(steps, total, value, time.perf_counter() - start_time)
            log.info(
                "step %d/%d loss %.3f (%.0f s, ETA %.0f s)",
                steps,
                total,
                value,
                done.elapsed_s,
                done.eta_s,
            )
            if on_step is not None:
                on_step(done)
            if steps == 1:
                first_loss = epoch_losses[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    # PEFT's default ("auto") looks the base model's config.json up on the Hub to see whether
    # the vocabulary was resized: a network call per save, and offline two warnings that
    # reached a default run's console from the fine-tune actor. We never resize it; the
    # embeddings are saved only where finetune.target_modules adapts them
    peft_model.save_pretrained(
        out, save_embedding_layers=bool(EMBEDDING_MODULES & set(cfg.target_modules))
    )
    result = FinetuneResult(
        adapter_dir=str(out.resolve()),
        base_model=model,
        base_model_path=path,
        examples=len(encoded),
        train_loss=sum(epoch_losses) / len(epoch_losses),
        first_loss=first_loss,
        steps=steps,
        seconds=time.perf_counter() - start_time,
        cut=cut,
        version=version,
        init_adapter=init_adapter,
        settings=cfg.model_dump(mode="json")
        | {
            "seed": seed,
            "lr": lr,
            "epochs": epochs,
            "schedule": schedule,
            "prompt_grad": prompt_grad,
            "share_prompts": share_prompts,
        },
    )
    (out / METADATA_FILE).write_text(json.dumps(asdict(result), indent=2) + "\n")
    return result


def read_metadata(adapter_dir: str | Path) -> dict[str, Any]:
    """The metadata JSON written next to an adapter."""
    path = Path(adapter_dir) / METADATA_FILE
    if not path.is_file():
        raise ValueError(f"no {METADATA_FILE} in {adapter_dir}")
    data: dict[str, Any] = json.loads(path.read_text())
    return data
