"""Proxy-training benchmark (issue 4, item 8). Prints markdown tables; every number is a
ratio against a baseline measured in the same run, on the same model, data and steps.

(a) Recipe and sandbox cost: training samples/s of a bare, hand-written torch loop
    (normalised float tensors, shuffled index batches, AdamW, cross-entropy) against the
    proxy recipe in-process (`train_proxy`) and the whole sandboxed evaluation
    (`evaluate_program`: a fresh confined child per run). The sandbox row gives the
    training loop's samples/s and an end-to-end rate (samples over the parent's wall time,
    which includes program load, model build and the test-set pass).
(b) Data path: the recipe's tensors-on-device batches against a torch DataLoader over a
    per-sample Dataset (normalisation in __getitem__, default collate), as a torchvision
    pipeline does.

Runs are interleaved and repeated; the median is reported. On a GPU (`--device cuda`) the
sandbox row is skipped when the sandbox cannot reach the GPU.

    python bench/proxy_bench.py [--dataset mnist5k | --synthetic cifar] [--seed-program
    plain_cnn] [--epochs 1] [--repeats 3] [--threads 1] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from llmnas_dist.evaluation.datasets import load_dataset
from llmnas_dist.evaluation.evaluate import evaluate_program
from llmnas_dist.evaluation.recipe import DeviceData, Recipe, seed_everything, train_proxy
from llmnas_dist.sandbox.runner import SandboxLimits
from llmnas_dist.seeds import load_seeds


def synthetic_cifar(n_train: int, n_test: int) -> dict[str, Any]:
    """CIFAR-10-sized random data (3x32x32 uint8, 10 classes) for speed measurements."""
    gen = torch.Generator().manual_seed(0)
    return {
        "x_train": torch.randint(0, 256, (n_train, 3, 32, 32), generator=gen, dtype=torch.uint8),
        "y_train": torch.randint(0, 10, (n_train,), generator=gen),
        "x_test": torch.randint(0, 256, (n_test, 3, 32, 32), generator=gen, dtype=torch.uint8),
        "y_test": torch.randint(0, 10, (n_test,), generator=gen),
        "scale": 255.0,
        "mean": [0.5, 0.5, 0.5],
        "std": [0.29, 0.29, 0.29],
    }


def build_model(code: str, tensors: dict[str, Any], seed: int) -> torch.nn.Module:
    """Build a trusted seed program in-process (benchmarks only; never generated code)."""
    namespace: dict[str, Any] = {"__name__": "__bench__"}
    exec(compile(code, "<seed>", "exec"), namespace)
    seed_everything(seed)
    shape = (2, *tensors["x_train"].shape[1:])
    return namespace["Net"](shape, (10,), {}, torch.device("cpu"))


def steps_for(tensors: dict[str, Any], recipe: Recipe) -> int:
    per_epoch = len(tensors["y_train"]) // recipe.batch_size
    return max(1, round((recipe.epochs or 1.0) * per_epoch))


def bare_loop(model: torch.nn.Module, tensors: dict[str, Any], recipe: Recipe) -> float:
    """The hand-written baseline: samples/s of the same number of steps."""
    device = torch.device(recipe.device)
    data = DeviceData(tensors, device)
    x_all = data.batch(data.x_train)  # normalised once, up front
    y_all = data.y_train
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    steps, bs, n = steps_for(tensors, recipe), recipe.batch_size, len(y_all)
    gen = torch.Generator().manual_seed(recipe.seed)
    _sync(device)
    begun = time.perf_counter()
    order = torch.randperm(n, generator=gen).to(device)
    for step in range(steps):
        idx = order[(step * bs) % (n - bs + 1) :][:bs]
        with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x_all[idx]).float(), y_all[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    _sync(device)
    return steps * bs / (time.perf_counter() - begun)


class PerSampleDataset(torch.utils.data.Dataset):
    """A torchvision-style dataset: one normalised sample per __getitem__."""

    def __init__(self, tensors: dict[str, Any]) -> None:
        self.x, self.y = tensors["x_train"], tensors["y_train"]
        std = torch.tensor(tensors["std"]).reshape(-1, 1, 1)
        self.mul = 1.0 / (float(tensors["scale"]) * std)
        self.add = -torch.tensor(tensors["mean"]).reshape(-1, 1, 1) / std

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.x[i].float() * self.mul + self.add, self.y[i]


def dataloader_loop(model: torch.nn.Module, tensors: dict[str, Any], recipe: Recipe) -> float:
    device = torch.device(recipe.device)
    loader = torch.utils.data.DataLoader(
        PerSampleDataset(tensors),
        batch_size=recipe.batch_size,
        shuffle=True,
        drop_last=True,
        generator=torch.Generator().manual_seed(recipe.seed),
        pin_memory=device.type == "cuda",
    )
    model.to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=recipe.lr)
    steps, done = steps_for(tensors, recipe), 0
    _sync(device)
    begun = time.perf_counter()
    while done < steps:
        for x, y in loader:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, torch.bfloat16, enabled=device.type == "cuda"):
                loss = F.cross_entropy(model(x).float(), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
    _sync(device)
    return steps * recipe.batch_size / (time.perf_counter() - begun)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def median_of(runs: dict[str, list[float]]) -> dict[str, float]:
    return {name: statistics.median(values) for name, values in runs.items() if values}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--dataset", default="mnist5k")
    p.add_argument("--synthetic", choices=("cifar",), help="CIFAR-10-sized random data instead")
    p.add_argument("--seed-program", default="plain_cnn")
    p.add_argument("--epochs", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-sandbox", action="store_true", help="skip the sandboxed row")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    if args.synthetic:
        tensors, label = synthetic_cifar(20_000, 2_000), "synthetic CIFAR-10-sized (20k)"
    else:
        tensors, label = load_dataset(args.dataset, 0).tensors(), args.dataset
    code = load_seeds()[args.seed_program]
    recipe = Recipe(epochs=args.epochs, batch_size=args.batch_size, device=args.device)
    limits = SandboxLimits(
        timeout_s=3600, memory_mb=16384, cpu_time_s=3600 * args.threads, threads=args.threads
    )
    use_sandbox = not args.no_sandbox and not args.synthetic and args.device == "cpu"

    def recipe_run() -> float:
        return float(train_proxy(build_model(code, tensors, 0), tensors, recipe)["samples_per_s"])

    def sandbox_run() -> tuple[float, float]:
        r = evaluate_program(code, args.dataset, recipe, limits)
        if not r.ok:
            raise RuntimeError(f"sandboxed run failed: {r.error_class}: {r.message}")
        samples = steps_for(tensors, recipe) * recipe.batch_size
        return float(r.samples_per_s or 0.0), samples / float(r.duration_s or 1.0)

    measures: dict[str, Callable[[], Any]] = {
        "bare": lambda: bare_loop(build_model(code, tensors, 0), tensors, recipe),
        "recipe": recipe_run,
        "dataloader": lambda: dataloader_loop(build_model(code, tensors, 0), tensors, recipe),
    }
    if use_sandbox:
        measures["sandbox"] = sandbox_run
    for fn in measures.values():  # warm-up: allocator, zygote, kernels
        fn()
    runs: dict[str, list[float]] = {
        "bare": [],
        "recipe": [],
        "dataloader": [],
        "sandbox": [],
        "sandbox_e2e": [],
    }
    for _ in range(args.repeats):
        for name, fn in measures.items():
            value = fn()
            if name == "sandbox":
                runs["sandbox"].append(value[0])
                runs["sandbox_e2e"].append(value[1])
            else:
                runs[name].append(value)
    med = median_of(runs)
    steps = steps_for(tensors, recipe)
    print(
        f"## proxy training: {args.seed_program} on {label}, {steps} steps of "
        f"{recipe.batch_size}, device {args.device}, {args.threads} thread(s), "
        f"median of {args.repeats}\n"
    )
    print("| path | samples/s | ratio to bare loop |")
    print("|---|---:|---:|")
    rows = [
        ("bare hand-written loop", "bare"),
        ("proxy recipe, in-process", "recipe"),
        ("sandboxed evaluation (training loop)", "sandbox"),
        ("sandboxed evaluation (end to end)", "sandbox_e2e"),
    ]
    for title, key in rows:
        if key in med:
            print(f"| {title} | {med[key]:.0f} | {med[key] / med['bare']:.3f} |")
    print("\n| data path | samples/s | ratio |")
    print("|---|---:|---:|")
    print(f"| torch DataLoader, per-sample Dataset | {med['dataloader']:.0f} | 1.000 |")
    print(
        f"| tensors on device (recipe) | {med['recipe']:.0f} | "
        f"{med['recipe'] / med['dataloader']:.3f} |"
    )


if __name__ == "__main__":
    main()
