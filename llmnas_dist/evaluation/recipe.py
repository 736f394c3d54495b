"""The proxy recipe: one fixed, seeded training procedure that makes scores comparable.

`train_proxy` trains a built model on dataset tensors and measures it on the test split
(`train_lemur`: the program's own `train_setup`/`learn`, scored alike); it is used
in-process for trusted code (benchmarks, tests) and inside the sandbox's worker for
generated programs (the `train` task, llmnas_dist.sandbox.child.tasks).

Fast path: the whole dataset is moved to the device once as uint8 and each batch is
indexed there and normalised on the fly (no DataLoader, no per-sample Python); on a GPU the
forward runs under bf16 autocast with channels_last. Deterministic on a CPU: the model's
initialisation, dropout, the shuffling and the augmentation all draw from generators seeded
by `Recipe.seed`, with the thread count fixed by the caller.

A loss that turns NaN or inf stops training and is reported as `diverged`; the parent
turns that into a failed evaluation (nan_output), never a crash.

This module imports only torch at import time: the sandbox's supervisor imports it before
the fork, so the worker (which may no longer read the source tree) already has it.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

if TYPE_CHECKING:
    from llmnas_dist.config import EvaluationConfig

# ATen picks its SIMD kernels (AVX2, AVX-512) once, on first use, through cpuinfo, which
# reads /proc and /sys. A confined sandbox worker cannot read them and would get the scalar
# kernels (half the speed); this module is imported before the fork, so decide it here.
CPU_CAPABILITY = torch.backends.cpu.get_cpu_capability()

OPTIMIZERS = ("sgd", "adam", "adamw")
# "fixed": the recipe below trains every program alike; "lemur": the program's own
# train_setup(prm) and learn(train_data), as LEMUR trains it, scored by the same test pass.
RECIPES = ("fixed", "lemur")
EVAL_BATCH = 512
DIVERGENCE_CHECK_STEPS = 25  # NaN checks sync the device: every this many steps, not every step
SGD_MOMENTUM = 0.9
RECIPE_FINGERPRINT_LEN = 16  # hex digits of sha256: the archive's evaluations.recipe


@dataclass(frozen=True)
class Recipe:
    """Everything that decides a proxy score besides the program and the data."""

    optimizer: str = "adamw"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 64
    epochs: float | None = 1.0
    budget_s: float | None = None
    augment: bool = False
    seed: int = 0
    device: str = "cpu"
    input_size: int | None = None  # square side images are resized to on the device
    name: str = "fixed"  # one of RECIPES

    def __post_init__(self) -> None:
        if self.name not in RECIPES:
            raise ValueError(f"recipe must be one of {RECIPES}, got {self.name!r}")
        if self.input_size is not None and (
            type(self.input_size) is not int or not 4 <= self.input_size <= 1024
        ):
            raise ValueError(f"input_size must be an int in 4..1024, got {self.input_size!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {self.optimizer!r}")
        if (self.epochs is None) == (self.budget_s is None):
            raise ValueError("set exactly one of epochs and budget_s")
        for name in ("lr", "epochs", "budget_s"):
            value = getattr(self, name)
            if value is not None and not (
                isinstance(value, int | float) and math.isfinite(value) and value > 0
            ):
                raise ValueError(f"Recipe.{name} must be a positive finite number, got {value!r}")
        if type(self.batch_size) is not int or self.batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {self.batch_size!r}")
        if type(self.seed) is not int or self.seed < 0:
            raise ValueError(f"seed must be a non-negative int, got {self.seed!r}")
        if not (self.device == "cpu" or self.device.startswith("cuda")):
            raise ValueError(f"device must be 'cpu' or 'cuda[:N]', got {self.device!r}")

    @classmethod
    def from_config(
        cls,
        cfg: EvaluationConfig,
        *,
        seed: int = 0,
        epochs: float | None = None,
        budget_s: float | None = None,
        device: str = "cpu",
    ) -> Recipe:
        """The configured recipe; `epochs` or `budget_s` (one at most) override its budget."""
        if epochs is not None and budget_s is not None:
            raise ValueError("give epochs or budget_s, not both")
        if epochs is None and budget_s is None:
            epochs, budget_s = cfg.epochs, cfg.budget_s
        return cls(
            optimizer=cfg.optimizer,
            lr=cfg.lr,
            weight_decay=cfg.weight_decay,
            batch_size=cfg.batch_size,
            epochs=epochs,
            budget_s=budget_s,
            augment=cfg.augment,
            seed=seed,
            device=device,
            input_size=cfg.input_size,
            name=cfg.recipe,
        )

    def to_payload(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def fingerprint(self) -> str:
        """What makes two results of one program, dataset, budget and seed interchangeable:
        the training fields, the kind of device, torch's version and on a CPU its SIMD
        kernels (they decide the low bits: the default run's best seed scored 0.875 on an
        AMX Xeon, 0.876 on an AVX2 EPYC). On a CPU training is deterministic, so an archived result
        with the same fingerprint is the result training again would give (evaluation.reuse)."""
        kind = self.device.split(":")[0]
        fields = {k: v for k, v in asdict(self).items() if k not in ("seed", "epochs", "budget_s")}
        fields |= {"device": kind, "torch": torch.__version__}
        if kind == "cpu":
            fields["kernels"] = CPU_CAPABILITY
        blob = json.dumps(fields, sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:RECIPE_FINGERPRINT_LEN]


class Diverged(Exception):
    """The training loss became NaN or inf."""

    def __init__(self, step: int) -> None:
        self.step = step
        super().__init__(f"training loss became NaN or inf by step {step}")


def make_optimizer(recipe: Recipe, params: Any) -> torch.optim.Optimizer:
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=recipe.lr, momentum=SGD_MOMENTUM, weight_decay=recipe.weight_decay
        )
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


def augment_batch(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random crop (zero padding of 1/8 of the side) and horizontal flip, per sample, on the
    batch's device, with draws from `gen` (a CPU generator, so CPU and GPU runs share them)."""
    b, _, h, w = x.shape
    pad = max(1, min(h, w) // 8)
    padded = F.pad(x, (pad, pad, pad, pad))
    oy = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    ox = torch.randint(0, 2 * pad + 1, (b,), generator=gen).to(x.device)
    flip = (torch.rand(b, generator=gen) < 0.5).to(x.device)
    rows = oy[:, None] + torch.arange(h, device=x.device)
    cols = ox[:, None] + torch.arange(w, device=x.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(b, device=x.device)[:, None, None]
    # padded[b, :, rows, cols] -> (B, H, W, C); back to NCHW.
    return padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]].permute(0, 3, 1, 2)


class DeviceData:
    """A dataset resident on the device as uint8; batches are indexed and normalised there."""

    def __init__(
        self, tensors: dict[str, Any], device: torch.device, size: int | None = None
    ) -> None:
        self.device = device
        self.size = size  # resize each batch to size x size on the device (None: as stored)
        self.x_train = tensors["x_train"].to(device)
        self.y_train = tensors["y_train"].to(device)
        self.x_test = tensors["x_test"].to(device)
        self.y_test = tensors["y_test"].to(device)
        scale = float(tensors["scale"])
        mean = torch.tensor(tensors["mean"], dtype=torch.float32, device=device)
        std = torch.tensor(tensors["std"], dtype=torch.float32, device=device)
        # (x / scale - mean) / std as one multiply-add per pixel
        self.mul = (1.0 / (scale * std)).reshape(1, -1, 1, 1)
        self.add = (-mean / std).reshape(1, -1, 1, 1)
        self.channels_last = device.type == "cuda"

    def batch(self, x: torch.Tensor) -> torch.Tensor:
        out = x.float() * self.mul + self.add
        if self.size is not None and tuple(out.shape[2:]) != (self.size, self.size):
            # per batch, on the device: the stored set stays uint8 at its own size
            out = F.interpolate(out, size=(self.size, self.size), mode="bilinear")
        return out.contiguous(memory_format=torch.channels_last) if self.channels_last else out

    @property
    def in_shape(self) -> tuple[int, ...]:
        channels, height, width = self.x_train.shape[1:]
        return (channels, self.size, self.size) if self.size else (channels, height, width)


def evaluate_accuracy(model: torch.nn.Module, data: DeviceData) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) on the test split, in eval mode."""
    model.eval()
    correct = torch.zeros((), dtype=torch.int64, device=data.device)
    loss_sum = torch.zeros((), dtype=torch.float64, device=data.device)
    autocast = data.device.type == "cuda"
    with torch.no_grad(), torch.autocast(data.device.type, torch.bfloat16, enabled=autocast):
        for start in range(0, len(data.y_test), EVAL_BATCH):
            x = data.batch(data.x_test[start : start + EVAL_BATCH])
            y = data.y_test[start : start + EVAL_BATCH]
            logits = model(x).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum").double()
            correct += (logits.argmax(dim=1) == y).sum()
    n = max(1, len(data.y_test))
    return int(correct) / n, float(loss_sum) / n


@dataclass(frozen=True)
class StepPlan:
    """How far a recipe trains on n samples: full batches of `bs` (a batch of one breaks
    BatchNorm), `total` steps (inf under a time budget) until `deadline`."""

    n: int
    bs: int
    per_epoch: int
    total: float
    deadline: float

    @classmethod
    def of(cls, recipe: Recipe, n: int, begun: float) -> StepPlan:
        bs = min(recipe.batch_size, n)
        per_epoch = n // bs
        total = max(1, round(recipe.epochs * per_epoch)) if recipe.epochs is not None else math.inf
        deadline = begun + recipe.budget_s if recipe.budget_s is not None else math.inf
        return cls(n, bs, per_epoch, total, deadline)

    def measured(
        self, model: torch.nn.Module, data: DeviceData, steps: int, begun: float, train_s: float
    ) -> dict[str, Any]:
        """The test pass after `steps` full batches; Diverged when its loss is not finite."""
        accuracy, loss_value = evaluate_accuracy(model, data)
        if not math.isfinite(loss_value):
            raise Diverged(steps)
        samples = steps * self.bs
        return {
            "accuracy": accuracy,
            "loss": loss_value,
            "epochs_done": samples / self.n,
            "steps": steps,
            "duration_s": time.perf_counter() - begun,
            "train_s": train_s,
            "samples_per_s": samples / train_s if train_s > 0 else 0.0,
        }


def train_proxy(model: torch.nn.Module, tensors: dict[str, Any], recipe: Recipe) -> dict[str, Any]:
    """Train `model` (already built and seeded) with the recipe and measure it on the test
    split. Returns accuracy, loss, epochs_done, duration_s, train_s, samples_per_s, steps.
    Raises Diverged when the training loss is NaN or inf."""
    device = torch.device(recipe.device)
    begun = time.perf_counter()
    data = DeviceData(tensors, device, recipe.input_size)
    model.to(device)
    if data.channels_last:
        model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    optimizer = make_optimizer(recipe, model.parameters())
    gen = torch.Generator().manual_seed(recipe.seed)
    plan = StepPlan.of(recipe, len(data.y_train), begun)
    autocast = device.type == "cuda"
    running = torch.zeros((), device=device)
    steps = 0
    order = torch.empty(0, dtype=torch.int64)
    model.train()
    train_begun = time.perf_counter()
    while steps < plan.total and time.perf_counter() < plan.deadline:
        pos = (steps % plan.per_epoch) * plan.bs
        if pos == 0:  # a new epoch: a fresh seeded order
            order = torch.randperm(plan.n, generator=gen).to(device)
        idx = order[pos : pos + plan.bs]
        x = data.batch(data.x_train[idx])
        if recipe.augment:
            x = augment_batch(x, gen)
        with torch.autocast(device.type, torch.bfloat16, enabled=autocast):
            loss = F.cross_entropy(model(x).float(), data.y_train[idx])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        running += loss.detach()
        steps += 1
        if steps % DIVERGENCE_CHECK_STEPS == 0 and not bool(torch.isfinite(running)):
            raise Diverged(steps)
    if not bool(torch.isfinite(running)):
        raise Diverged(steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    train_s = time.perf_counter() - train_begun
    result = plan.measured(model, data, steps, begun, train_s)
    return {**result, "train_loss": float(running) / max(1, steps)}


class EpochBatches:
    """One epoch of (inputs, labels) batches on the device for a program's own `learn()`:
    a seeded order, full batches only, ending early at the run's deadline."""

    def __init__(
        self, data: DeviceData, order: torch.Tensor, batch: int, count: int, deadline: float
    ) -> None:
        self.data, self.order, self.bs, self.count = data, order, batch, count
        self.deadline = deadline
        self.served = 0

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        for i in range(self.count):
            if time.perf_counter() >= self.deadline:
                return
            idx = self.order[i * self.bs : (i + 1) * self.bs]
            self.served += 1
            yield self.data.batch(self.data.x_train[idx]), self.data.y_train[idx]


def train_lemur(
    model: torch.nn.Module, tensors: dict[str, Any], recipe: Recipe, prm: dict[str, Any]
) -> dict[str, Any]:
    """LEMUR's recipe: `model.train_setup(prm)` once, then `model.learn(batches)` per epoch
    (the budget cuts the last epoch short), then the same test pass as the fixed recipe.
    Raises Diverged when the test loss is NaN or inf (the program's loss is its own)."""
    device = torch.device(recipe.device)
    begun = time.perf_counter()
    data = DeviceData(tensors, device, recipe.input_size)
    model.to(device)
    gen = torch.Generator().manual_seed(recipe.seed)
    plan = StepPlan.of(recipe, len(data.y_train), begun)
    model.train_setup(prm)  # type: ignore[operator]
    steps = 0
    train_begun = time.perf_counter()
    while steps < plan.total and time.perf_counter() < plan.deadline:
        order = torch.randperm(plan.n, generator=gen).to(device)
        count = int(min(plan.per_epoch, plan.total - steps))
        batches = EpochBatches(data, order, plan.bs, count, plan.deadline)
        model.train()
        model.learn(batches)  # type: ignore[operator]
        if batches.served == 0:
            break
        steps += batches.served
    return plan.measured(model, data, steps, begun, time.perf_counter() - train_begun)


def seed_everything(seed: int) -> None:
    """Seed the global generators a model's __init__ and dropout draw from. (CPU kernels are
    deterministic at a fixed thread count; `use_deterministic_algorithms` is not called: it
    imports half of torch's compiler stack, which a confined worker cannot read.) Programs
    may draw from `random` and numpy's global generator too (LEMUR's do): seeded alike."""
    import random

    import numpy

    torch.manual_seed(seed)
    random.seed(seed)
    numpy.random.seed(seed)
