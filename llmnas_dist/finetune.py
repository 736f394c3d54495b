"""LoRA fine-tuning on (prompt -> completion) pairs: the CE update and the warm start.

Maximum likelihood of the elite answers given their prompts, with the loss on completion
tokens only: the prompt is context the model is not asked to reproduce. Every example is
the chat-formatted prompt exactly as `generation.chat_text` renders it for sampling,
followed by the answer and the end-of-turn token, so what is trained is what is sampled.
The result is a peft adapter folder plus a metadata JSON (base model, example count,
train loss, settings) that the archive records.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from llmnas_dist.config import FinetuneConfig
from llmnas_dist.datasets import DatasetSpec
from llmnas_dist.delta import make_delta
from llmnas_dist.errors import ConfigError
from llmnas_dist.generation import chat_text
from llmnas_dist.models import resolve_model
from llmnas_dist.prompts import delta_answer, full_answer, parent_prompt

METADATA_FILE = "llmnas_adapter.json"
IGNORE = -100  # label value the loss skips


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


@dataclass
class FinetuneResult:
    """What a training run produced; also written as the adapter's metadata JSON."""

    adapter_dir: str
    base_model: str
    base_model_path: str
    examples: int
    train_loss: float  # mean completion-token loss over the last epoch
    first_loss: float  # mean loss of the first optimizer step (before any update)
    steps: int
    seconds: float
    version: int | None = None
    init_adapter: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)


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
            examples.append(Example(prompt, delta_answer(make_delta(pair.parent, pair.child))))
    return examples


def encode_example(tokenizer: Any, example: Example, max_length: int) -> tuple[list[int], int]:
    """Token ids of prompt + completion + end-of-turn, and where the completion starts.
    Prompt and completion are tokenized apart so the split is exact (and matches sampling,
    which starts from the prompt's tokens). Too long: the completion's tail is cut."""
    prompt_ids = tokenizer(chat_text(tokenizer, example.prompt), add_special_tokens=False)[
        "input_ids"
    ]
    answer_ids = tokenizer(example.completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        answer_ids = [*answer_ids, tokenizer.eos_token_id]
    ids = (prompt_ids + answer_ids)[:max_length]
    return ids, len(prompt_ids)


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
    and short answers weigh by their length, as maximum likelihood does)."""
    import torch.nn.functional as F

    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    shifted = logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    return F.cross_entropy(
        shifted.reshape(-1, shifted.size(-1)), targets.reshape(-1), ignore_index=IGNORE
    )


def _encode_all(tokenizer: Any, examples: Sequence[Example], max_length: int) -> list:
    encoded = [encode_example(tokenizer, ex, max_length) for ex in examples]
    # an example whose prompt fills the whole budget has nothing left to learn from
    kept = [(ids, start) for ids, start in encoded if len(ids) > start]
    if not kept:
        raise ValueError(
            f"no example has completion tokens within max_length={max_length} "
            f"({len(examples)} examples given)"
        )
    return kept


def mean_nll(model: Any, tokenizer: Any, examples: Sequence[Example], max_length: int) -> float:
    """Mean per-token negative log-likelihood of the completions, averaged over examples."""
    import torch

    was_training = model.training
    model.eval()
    total = 0.0
    encoded = _encode_all(tokenizer, examples, max_length)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    with torch.inference_mode():
        for item in encoded:
            total += float(_completion_loss(model, _batch([item], pad)))
    model.train(was_training)
    return total / len(encoded)


def load_base(model: str, device: str | None = None) -> tuple[Any, Any, str, str]:
    """(model, tokenizer, resolved path, device): fp32 on a CPU, bf16 weights on a GPU."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(model)
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
        base: Any = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        base.to(device)
    except OSError as exc:
        raise ConfigError(f"cannot load model {model!r}: {exc}") from None
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return base, tokenizer, path, device


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
        task_type="CAUSAL_LM",
    )
    try:
        return get_peft_model(base, lora)
    except ValueError as exc:  # no module matched target_modules
        raise ConfigError(f"finetune.target_modules {cfg.target_modules}: {exc}") from None


def train_lora(
    model: str,
    examples: Sequence[Example],
    cfg: FinetuneConfig,
    out_dir: str | Path,
    seed: int = 0,
    init_adapter: str | None = None,
    version: int | None = None,
    device: str | None = None,
) -> FinetuneResult:
    """Train a LoRA adapter on `examples` (optionally continuing `init_adapter`) and save it
    with its metadata in `out_dir`, which must not exist yet (adapters are immutable)."""
    import torch

    out = Path(out_dir)
    if out.exists():
        raise ValueError(f"adapter folder {out} already exists; adapters are never overwritten")
    if not examples:
        raise ValueError("no training examples")
    start_time = time.perf_counter()
    torch.manual_seed(seed)
    base, tokenizer, path, device = load_base(model, device)
    # recompute activations in the backward pass: long code examples otherwise need
    # tens of GB (a 1k-token batch of 4 on the 135M model was OOM-killed at 19 GB)
    base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    base.config.use_cache = False
    peft_model = _lora_model(base, cfg, init_adapter)
    encoded = _encode_all(tokenizer, examples, cfg.max_length)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr)
    rng = random.Random(seed)
    peft_model.train()
    steps, first_loss = 0, math.nan
    epoch_losses: list[float] = []
    for _ in range(cfg.epochs):
        order = list(range(len(encoded)))
        rng.shuffle(order)
        epoch_losses = []
        for i in range(0, len(order), cfg.batch_size):
            batch = _batch(
                [encoded[j] for j in order[i : i + cfg.batch_size]], tokenizer.pad_token_id
            )
            loss = _completion_loss(peft_model, {k: v.to(device) for k, v in batch.items()})
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            epoch_losses.append(loss.item())
            if steps == 1:
                first_loss = epoch_losses[0]
    out.parent.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out)
    result = FinetuneResult(
        adapter_dir=str(out.resolve()),
        base_model=model,
        base_model_path=path,
        examples=len(encoded),
        train_loss=sum(epoch_losses) / len(epoch_losses),
        first_loss=first_loss,
        steps=steps,
        seconds=time.perf_counter() - start_time,
        version=version,
        init_adapter=init_adapter,
        settings=cfg.model_dump(mode="json") | {"seed": seed},
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
