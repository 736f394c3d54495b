"""A LoRA adapter merged into the base weights while a call decodes, the weights restored
exactly after (`TransformersGenerator` decodes every call with its active adapter so)."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def merged_adapter(model: Any) -> Iterator[None]:
    """The active LoRA adapter merged into the base weights for one call; the base weights
    are put back exactly after. Unmerged, each adapted projection runs two more small
    matmuls a forward pass: decoding at batch 1 took 48.8 ms a pass against 44.6 ms merged
    (bench/generation_bench.py merge: SmolLM2-135M in bf16, the warm start's adapter, 2-core
    AMX Xeon; the greedy tokens the same at 160 of 160). PEFT's own unmerge
    subtracts the product again, which in bf16 does not give the base weights back: the
    adapted layers' base weights are copied instead (13M parameters for the default's)."""
    import torch
    from peft.tuners.lora import LoraLayer

    layers: list[Any] = [m for m in model.modules() if isinstance(m, LoraLayer)]
    saved = [m.get_base_layer().weight.detach().clone() for m in layers]
    model.merge_adapter()
    try:
        yield
    finally:
        with torch.no_grad():
            for layer, weight in zip(layers, saved, strict=True):
                layer.get_base_layer().weight.copy_(weight)
                layer.merged_adapters.clear()
