"""The in-place KV cache (generation/kv_cache.py) against transformers' DynamicCache: the
same logits through prefill, one-token steps, draft passes, crops and regrowth."""

from __future__ import annotations

import pytest
import torch
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from llmnas_dist.generation import kv_cache
from llmnas_dist.generation.kv_cache import answer_cache


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=1024,
    )
    return LlamaForCausalLM(config).eval()


def _steps(model, cache, steps):
    """Feed `steps` (token lists; an int n < 0 drops n tokens) and collect the logits."""
    rows = []
    with torch.inference_mode():
        for step in steps:
            if isinstance(step, int):
                cache.crop(step)
                continue
            out = model(input_ids=torch.tensor([step]), cache=cache, use_cache=True)
            rows.append(out.logits[0])
    return rows


def test_in_place_cache_gives_dynamic_cache_s_logits_through_crops_and_regrowth(model):
    g = torch.Generator().manual_seed(1)
    prompt = torch.randint(0, 97, (40,), generator=g).tolist()
    steps: list = [prompt]
    for i in range(60):  # past the first buffer (prompt + GROW_SLACK) with 9-token passes
        steps.append(torch.randint(0, 97, (9,), generator=g).tolist())
        steps.append(-(i % 7))  # a rejected draft's tail, or nothing
    steps += [[5], -30, [6, 7, 8]]  # a redraw taken far back, then on
    assert sum(len(s) if isinstance(s, list) else s for s in steps) > kv_cache.GROW_SLACK + 40
    plain, in_place = DynamicCache(), answer_cache()
    assert type(in_place).__name__ == "InPlaceCache"  # this transformers builds layered caches
    expected, got = _steps(model, plain, steps), _steps(model, in_place, steps)
    assert in_place.get_seq_length() == plain.get_seq_length()
    for a, b in zip(expected, got, strict=True):
        torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-5)


def test_in_place_cache_refuses_a_positive_crop(model):
    cache = answer_cache()
    _steps(model, cache, [[1, 2, 3]])
    with pytest.raises(ValueError, match="negative"):
        cache.crop(2)
    cache.crop(-3)
    assert cache.get_seq_length() == 0
