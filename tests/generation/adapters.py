"""A small LoRA adapter for the generation tests: three elite answers and the settings that
train on them in seconds. Shared by test_finetune.py and test_generation.py (the vLLM swap).
"""

from __future__ import annotations

from pathlib import Path

from llmnas_dist.config import FinetuneConfig
from llmnas_dist.generation.finetune import Example, train_lora

# a few "elite" answers the small model would never write unprompted
ELITES = [
    Example(f"Improve network {name}: widen it.", f"<delta>\n-{old}\n+{new}\n</delta>")
    for name, old, new in [
        ("alpha", "nn.Linear(c * h * w, 64), nn.ReLU()", "nn.Linear(c * h * w, 256), nn.GELU()"),
        (
            "beta",
            "self.head = nn.Linear(64, out_shape[0])",
            "self.head = nn.Linear(256, out_shape[0])",
        ),
        ("gamma", "nn.ReLU()", "nn.SiLU(), nn.Dropout(0.1)"),
    ]
]
# LoRA on the last 20 of the model's 30 layers, as the default's adapters cover only the
# last ones (`finetune.lora_layers`): vLLM (the swap test) serves an adapter that leaves
# layers out
SMALL = FinetuneConfig(
    r=8, alpha=16, dropout=0.0, lr=3e-3, epochs=3, batch_size=3, max_length=256, lora_layers=20
)


def train_small_adapter(out: Path) -> Path:
    """A rank-8 adapter trained a few steps on ELITES (shared with the vLLM test)."""
    train_lora("smollm2-135m-instruct", ELITES, SMALL, out, seed=0)
    return out
