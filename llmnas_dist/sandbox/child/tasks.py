"""The sandbox's tasks (run in the worker) and what they need imported before the fork.

A task gets `load_program` (executes the program and returns its namespace: call it after
taking any references the program must not be able to patch) and the JSON payload, and
returns a JSON-able dict. `build` (the admission's build check) instantiates Net and forwards
a random batch; `train` (an evaluation) loads the data, instantiates Net and trains it with
the proxy recipe (llmnas_dist.evaluation.recipe). Both build Net through `build_net` and
count its parameters with `count_parameters`, on references taken before the program ran.

The worker may no longer read the interpreter's files (uid nobody, Landlock), so everything
a task or a program imports is imported before the fork (`preload_modules`, `TASK_MODULES`,
`import_keeping_environment`).

This module imports only the standard library at import time (torch, the recipe and the
static allowlist inside functions): the parent imports it for `TASKS`.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

LoadProgram = Callable[[], dict[str, Any]]
Task = Callable[[LoadProgram, dict[str, Any]], dict[str, Any]]

# Modules the sandbox itself needs in the worker, beyond what a program may import.
SANDBOX_MODULES = ("traceback",)


def preload_modules() -> tuple[str, ...]:
    """What to import before the fork, so a worker that can no longer read the interpreter's
    files (uid nobody, Landlock) still has them: every module a program may import, taken
    from the static allowlist (llmnas_dist.program.policy, the one source of truth), plus ours.
    Imported here, not at module level: the parent imports this module for TASKS."""
    from llmnas_dist.program.policy import ALLOWED_IMPORTS

    return (*sorted(ALLOWED_IMPORTS), *SANDBOX_MODULES)


def import_keeping_environment(names: tuple[str, ...]) -> None:
    """Import modules, then undo any environment variable they set (torch._dynamo sets
    TORCHINDUCTOR_CACHE_DIR), so the program still sees only the scrubbed environment."""
    saved = dict(os.environ)
    for name in names:
        importlib.import_module(name)
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


def module_parameters(model: Any) -> list[Any]:
    """Distinct parameters reachable through the module tree, read from the instances'
    own dicts so that patched `parameters()`/`named_parameters()` methods cannot hide any."""
    seen_params: set[int] = set()
    seen_modules: set[int] = set()
    stack = [model]
    found = []
    while stack:
        module = stack.pop()
        if id(module) in seen_modules:
            continue
        seen_modules.add(id(module))
        state = object.__getattribute__(module, "__dict__")
        for param in dict(state.get("_parameters", {})).values():
            if param is not None and id(param) not in seen_params:
                seen_params.add(id(param))
                found.append(param)
        stack.extend(m for m in dict(state.get("_modules", {})).values() if m is not None)
    return found


def count_parameters(model: Any, numel: Callable[[Any], int]) -> int:
    return sum(int(numel(p)) for p in module_parameters(model))


# A forward that calls more torch functions than this is fingerprinted by its first ones and
# its count (the seeds call 40-400 a forward)
MAX_TRACED_CALLS = 100_000
_SCALARS = (bool, int, str, type(None))
MIN_SCALED_INIT = 64


def _describe(value: Any, tensor_type: Any, inits: dict[int, Any], depth: int = 0) -> Any:
    """What of an argument decides the computation: a tensor's shape and dtype (a
    parameter's shape and how it was initialised, `_init_kind`), a scalar's value, a
    sequence's items; of anything else its type."""
    if isinstance(value, tensor_type):
        if id(value) in inits:
            return ("P", tuple(value.shape), inits[id(value)])
        return ("T", tuple(value.shape), str(value.dtype))
    if isinstance(value, _SCALARS):
        return value
    if isinstance(value, float):
        return round(value, 6)
    if isinstance(value, (tuple, list)) and depth < 3:
        return tuple(_describe(v, tensor_type, inits, depth + 1) for v in value)
    return type(value).__name__


def _init_kind(param: Any) -> Any:
    """A parameter's initialisation, coarsely: its constant where it holds one value (a
    norm's ones, a zero-initialised layer); for a weight of 64 values or more, its standard
    deviation against torch's default (1 / sqrt(3 * fan_in)) in half-octaves: 0 for the
    default, 1 for kaiming-normal on a square layer; else only that it is random. Two draws
    of one scheme land in the same half-octave (the estimate's error is under a tenth of
    an octave at 64 values); a plain octave of the standard deviation put a seed's layer
    on a boundary, and one unused module more moved it across."""
    import math

    flat = param.detach().float().flatten()
    if flat.numel() == 0:
        return "empty"
    low, high = float(flat.min()), float(flat.max())
    if low == high:
        return ("c", round(low, 4))
    if param.dim() < 2 or flat.numel() < MIN_SCALED_INIT:
        return "random"
    fan_in = flat.numel() // int(param.shape[0])
    return ("s", round(2 * math.log2(float(flat.std()) * math.sqrt(3 * fan_in))))


def traced_forward(model: Any, batch: Any, torch: Any) -> tuple[Any, str]:
    """Forward `batch` through `model`, recording every torch function the network calls
    (name, argument shapes, parameters' initialisation, scalar arguments); returns the
    output and the record's sha256: what the network computes, apart from its random draws.
    A child whose fingerprint is its parent's adds nothing the forward runs (a module made
    and never called) and is the parent's network with other initial weights.

    Advisory only: a hostile program can make its own fingerprint say anything, which at
    worst admits a copy of its parent (as without it) or rejects itself."""
    import hashlib

    inits = {id(p): _init_kind(p) for p in module_parameters(model)}
    tensor_type = torch.Tensor
    calls: list[Any] = []

    class Recorder(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
            kwargs = kwargs or {}
            if len(calls) < MAX_TRACED_CALLS:
                name = getattr(func, "__qualname__", None) or getattr(func, "__name__", "?")
                described = _describe((args, sorted(kwargs.items())), tensor_type, inits)
                calls.append((name, described))
            else:
                calls[-1] = ("calls beyond", len(calls))
            return func(*args, **kwargs)

    with Recorder():
        out = model(batch)
    return out, hashlib.sha256(repr(calls).encode()).hexdigest()


def build_net(
    load_program: LoadProgram,
    in_shape: tuple[int, ...],
    num_classes: int,
    prm: dict[str, Any],
    device: Any,
    module_type: type,
) -> Any:
    """Execute the program and instantiate its Net, as LEMUR does; `module_type` is
    torch.nn.Module as taken before the program ran (it may patch torch)."""
    namespace = load_program()
    net_class = namespace.get("Net")
    if not isinstance(net_class, type):
        raise LookupError("the program defines no class Net")
    model = net_class(in_shape=in_shape, out_shape=(num_classes,), prm=prm, device=device)
    if not isinstance(model, module_type):
        raise TypeError(f"Net(...) returned {type(model).__name__}, not a torch.nn.Module")
    return model


def build_task(load_program: LoadProgram, payload: dict[str, Any]) -> dict[str, Any]:
    """Instantiate Net for the payload's shape, forward a random batch, measure it."""
    import torch

    # Trusted references, taken before a line of the program runs (it may patch torch).
    module_type = torch.nn.Module
    tensor_type = torch.Tensor
    module_train = torch.nn.Module.train
    numel = torch._C.TensorBase.numel
    size = torch._C.TensorBase.size
    isfinite = torch.isfinite
    tensor_all = torch._C.TensorBase.all
    randn = torch.randn
    no_grad = torch.no_grad
    cpu = torch.device("cpu")

    in_shape = tuple(int(v) for v in payload["in_shape"])
    prm = dict(payload["prm"])
    torch.manual_seed(0)  # the same initial draws for a program and its copies
    model = build_net(load_program, in_shape, int(payload["num_classes"]), prm, cpu, module_type)
    param_count = count_parameters(model, numel)
    module_train(model, False)
    with no_grad():
        out, function = traced_forward(model, randn(in_shape), torch)
    if not isinstance(out, tensor_type):
        return {"param_count": param_count, "output_shape": None, "output_type": type(out).__name__}
    return {
        "param_count": param_count,
        "output_shape": [int(v) for v in size(out)],
        "output_type": "Tensor",
        "finite": bool(tensor_all(isfinite(out))),
        "function": function,
    }


def train_task(load_program: LoadProgram, payload: dict[str, Any]) -> dict[str, Any]:
    """Load the data, execute the program, build Net and train it with the proxy recipe
    (llmnas_dist.evaluation.recipe, imported by `prepare` before the fork).

    Trusted references are taken before a line of the program runs; the program can still
    misreport its own score (the sandbox's documented residual risk), not anyone else's."""
    import torch

    from llmnas_dist.evaluation.recipe import (
        Diverged,
        Recipe,
        seed_everything,
        train_lemur,
        train_proxy,
    )

    recipe = Recipe(**payload["recipe"])
    module_type = torch.nn.Module
    numel = torch._C.TensorBase.numel
    tensors = torch.load(payload["data_path"], map_location="cpu", weights_only=True)
    channels, height, width = (int(v) for v in tensors["x_train"].shape[1:])
    if recipe.input_size is not None:
        height = width = recipe.input_size
    # in_shape[0] is the training batch, as LEMUR gives it
    in_shape = (recipe.batch_size, channels, height, width)
    if recipe.device != "cpu" and not torch.cuda.is_available():
        recipe = Recipe(**{**payload["recipe"], "device": "cpu"})
    seed_everything(recipe.seed)
    prm = dict(payload.get("prm") or {})
    num_classes = int(payload["num_classes"])
    device = torch.device(recipe.device)
    model = build_net(load_program, in_shape, num_classes, prm, device, module_type)
    params = count_parameters(model, numel)
    try:
        if recipe.name == "lemur":
            result = train_lemur(model, tensors, recipe, prm)
        else:
            result = train_proxy(model, tensors, recipe)
    except Diverged as exc:
        return {"diverged": True, "step": exc.step, "params": params}
    return {
        **result,
        "diverged": False,
        "params": params,
        "device": recipe.device,
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }


TASKS: dict[str, Task] = {"build": build_task, "train": train_task}
# Modules a task needs beyond preload_modules(), imported before the fork (by the zygote for
# all tasks, else by the supervisor): torch's optimizers import torch._dynamo on first use.
TASK_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("torch._dynamo", "llmnas_dist.evaluation.recipe")
}
