"""LoRA fine-tuning: examples and encoding (fast), real training on SmolLM2 (integration)."""

from __future__ import annotations

import json
import math

import pytest
from adapters import ELITES, SMALL, train_small_adapter

from llmnas_dist.admission.delta import apply_output, extract_code
from llmnas_dist.config import FinetuneConfig
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.generation.finetune import (
    METADATA_FILE,
    ElitePair,
    Example,
    build_examples,
    encode_example,
    encode_examples,
    read_metadata,
    train_lora,
)
from llmnas_dist.seeds import load_seeds

TINY = """import torch.nn as nn


class Net(nn.Module):
    def __init__(self, in_shape, out_shape, prm, device):
        super().__init__()
        c, h, w = in_shape[-3:]
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(c * h * w, 64), nn.ReLU())
        self.head = nn.Linear(64, out_shape[0])

    def forward(self, x):
        return self.head(self.body(x))
"""


def tiny_llama(layers: int):
    """A small real Llama with random weights (the torch seed fixed)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=50,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=layers,
        num_attention_heads=2,
        num_key_value_heads=2,
    )
    return LlamaForCausalLM(config)


class CharTokenizer:
    """A real (if trivial) tokenizer: one id per character, id 0 is end-of-turn."""

    eos_token_id = 0
    pad_token_id = 0
    chat_template = None

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(ch) for ch in text]}


def test_build_examples_mixes_delta_and_full_and_answers_apply():
    seeds = load_seeds()
    pairs = [
        ElitePair(code, code.replace("nn.ReLU(", "nn.GELU(", 1), 0.5)
        for code in seeds.values()
        if "nn.ReLU(" in code
    ]
    examples = build_examples(pairs, dataset_spec("digits"), full_code_fraction=0.3, seed=1)
    assert len(examples) == len(pairs) >= 8
    full = [e for e in examples if e.completion.startswith("<nn>")]
    assert 0 < len(full) < len(examples)
    for pair, ex in zip(pairs, examples, strict=True):
        if ex.completion.startswith("<delta>"):
            assert apply_output(pair.parent, ex.completion) == pair.child
        else:
            assert extract_code(ex.completion) == pair.child
        assert "0.5000" in ex.prompt
    same = build_examples(pairs, dataset_spec("digits"), full_code_fraction=0.3, seed=1)
    assert same == examples


def test_build_examples_rejects_bad_input():
    with pytest.raises(ValueError, match="child equals"):
        build_examples([ElitePair(TINY, TINY)], dataset_spec("digits"))
    with pytest.raises(ValueError, match="full_code_fraction"):
        build_examples([], dataset_spec("digits"), full_code_fraction=2.0)


def test_encode_masks_the_prompt_and_ends_with_eos():
    ids, start = encode_example(CharTokenizer(), Example("abc", "xy"), max_length=100)
    assert ids == [97, 98, 99, 120, 121, 0] and start == 3
    cut, start = encode_example(CharTokenizer(), Example("abc", "xyz"), max_length=4)
    assert cut == [97, 98, 99, 120] and start == 3


def test_encode_examples_counts_the_examples_that_do_not_fit():
    examples = [Example("abc", "xy"), Example("abc", "xyz"), Example("abcdefg", "x")]
    # "abc"+"xy"+eos is 6 tokens: fits 6; "abcxyz"+eos is 7: cut; the last prompt fills 6
    kept, cut = encode_examples(CharTokenizer(), examples, max_length=6)
    assert cut == 2
    assert kept == [([97, 98, 99, 120, 121, 0], 3), ([97, 98, 99, 120, 121, 122], 3)]
    assert encode_examples(CharTokenizer(), examples, max_length=20)[1] == 0
    with pytest.raises(ValueError, match="no example has completion tokens"):
        encode_examples(CharTokenizer(), [Example("abcdefg", "x")], max_length=6)


def test_train_lora_refuses_existing_folder_and_empty_set(tmp_path):
    with pytest.raises(ValueError, match="already exists"):
        train_lora("smollm2-135m-instruct", ELITES, SMALL, tmp_path)
    with pytest.raises(ValueError, match="no training examples"):
        train_lora("smollm2-135m-instruct", [], SMALL, tmp_path / "new")


@pytest.mark.integration
def test_lora_lowers_elite_nll_and_changes_generations(tmp_path):
    from llmnas_dist.generation.engine import TransformersGenerator
    from llmnas_dist.generation.finetune import mean_nll
    from llmnas_dist.generation.sampling import Sampling

    gen = TransformersGenerator("smollm2-135m-instruct")
    greedy = Sampling(temperature=0.0, max_new_tokens=24)
    prompt = ["Improve network delta: widen it."]
    plain = gen.generate(prompt, greedy)[0].text
    before = mean_nll(gen.model, gen.tokenizer, ELITES, SMALL.max_length)

    adapter = train_small_adapter(tmp_path / "adapter")
    meta = read_metadata(adapter)
    assert meta["base_model"] == "smollm2-135m-instruct"
    assert meta["examples"] == 3 and meta["steps"] == SMALL.epochs
    assert meta["cut"] == 0  # the elites fit in max_length 256
    assert meta["train_loss"] < meta["first_loss"]
    assert json.loads((adapter / METADATA_FILE).read_text())["settings"]["r"] == 8
    # LoRA on the last 20 of SmolLM2's 30 layers only (SMALL.lora_layers)
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == list(range(10, 30))

    adapted = gen.generate(prompt, greedy, adapter=str(adapter))[0].text
    after = mean_nll(gen.model, gen.tokenizer, ELITES, SMALL.max_length)  # adapter active
    print(f"elite NLL before {before:.3f} after {after:.3f} nats/token")
    # measured here: about 3.4 -> 1.5 nats per token; demand a clear margin
    assert after < before - 0.5, (before, after)
    assert plain != adapted
    assert gen.generate(prompt, greedy)[0].text == plain  # base is back without the adapter


def test_finetune_actor_asks_for_a_gpu_only_on_gpu_clusters():
    from llmnas_dist.config import ClusterConfig
    from workers.finetuner import finetune_options

    assert finetune_options(ClusterConfig(), {"CPU": 8, "GPU": 4})["num_gpus"] == 1.0
    assert finetune_options(ClusterConfig(), {"CPU": 8})["num_gpus"] == 0.0


@pytest.mark.integration
def test_finetune_actor_trains_an_adapter_on_ray(tmp_path):
    """The actor path end to end on real Ray: elite (parent, child) pairs in, adapter out."""
    import ray

    from llmnas_dist.config import ClusterConfig
    from llmnas_dist.generation.finetune import ElitePair
    from llmnas_dist.seeds import load_seeds
    from workers.finetuner import FinetuneActor, finetune_options

    parent = load_seeds()["plain_cnn"]
    assert "inplace=True" in parent
    child = parent.replace("inplace=True", "inplace=False", 1)
    elites = [ElitePair(parent, child, 0.5), ElitePair(parent, child, 0.5)]
    cfg = FinetuneConfig(
        r=4,
        alpha=8,
        dropout=0.0,
        lr=1e-3,
        epochs=1,
        batch_size=2,
        max_length=1536,
        full_code_fraction=0.0,
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        options = finetune_options(ClusterConfig(), ray.cluster_resources())
        actor = FinetuneActor.options(**options).remote("smollm2-135m-instruct", cfg)
        out = tmp_path / "adapter-c1"
        meta = ray.get(actor.train.remote(elites, "digits", str(out), version=1))
        last = ray.get(actor.progress.remote())  # what the driver's live line shows
    finally:
        ray.shutdown()
    assert meta.adapter_dir == str(out) and (out / METADATA_FILE).is_file()
    assert meta.examples == 2 and meta.version == 1 and meta.steps >= 1
    assert meta.base_model == "smollm2-135m-instruct"
    assert read_metadata(out)["train_loss"] == pytest.approx(meta.train_loss)
    # the config's choice reaches the training: no gradient through the prompt by default,
    # batches by length (the warm start alone batches by prompt)
    settings = read_metadata(out)["settings"]
    assert settings["prompt_grad"] is False and settings["share_prompts"] is False
    assert last.step == last.total == meta.steps and last.eta_s == 0.0
    assert math.isfinite(last.loss)


def test_learning_rate_schedules():
    from llmnas_dist.generation.finetune import learning_rate

    assert [learning_rate("constant", 1e-3, s, 10) for s in (0, 9)] == [1e-3, 1e-3]
    linear = [learning_rate("linear", 1.0, s, 20) for s in range(20)]
    assert linear[0] == 0.5 and linear[1] == 1.0  # two warm-up steps (a tenth)
    assert all(a > b for a, b in zip(linear[1:], linear[2:], strict=False))
    assert 0 < linear[-1] < 0.1
    with pytest.raises(ValueError, match="schedule"):
        learning_rate("cosine", 1.0, 0, 10)


def test_prompt_batches_group_examples_that_share_a_prompt():
    import random

    from llmnas_dist.generation.finetune import prompt_batches

    prompts = [(1, 2)] * 6 + [(3,)] * 2 + [(4, 5)]
    batches = prompt_batches(prompts, 4, random.Random(0))
    assert sorted(j for b in batches for j in b) == list(range(9))
    assert sorted(len(b) for b in batches) == [1, 2, 2, 4]
    assert all(len({prompts[j] for j in b}) == 1 for b in batches)


def test_length_batches_cover_every_example_once_and_pad_little():
    import random

    from llmnas_dist.generation.finetune import length_batches

    lengths = [random.Random(i).randint(100, 2000) for i in range(64)]
    batches = length_batches(lengths, 4, random.Random(0))
    assert sorted(j for b in batches for j in b) == list(range(64))
    assert all(len(b) == 4 for b in batches)
    padded = sum(max(lengths[j] for j in b) * len(b) for b in batches)
    naive = sum(max(lengths[j] for j in range(i, i + 4)) * 4 for i in range(0, 64, 4))
    assert padded < 0.8 * naive
    assert batches != length_batches(lengths, 4, random.Random(1))  # reshuffled per epoch


def test_completion_loss_from_kept_logits_equals_the_full_computation():
    """The loss computes logits only from the first completion position; on a small real
    Llama it must equal the loss over full logits."""
    import torch
    import torch.nn.functional as F

    from llmnas_dist.generation.finetune import IGNORE, _batch, _completion_loss

    model = tiny_llama(2).eval()
    encoded = [(list(range(1, 12)), 7), (list(range(3, 9)), 4)]  # (ids, completion start)
    batch = _batch(encoded, pad_id=0)
    kept = _completion_loss(model, batch)
    logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    full = F.cross_entropy(
        logits[:, :-1].reshape(-1, 50), batch["labels"][:, 1:].reshape(-1), ignore_index=IGNORE
    )
    assert torch.allclose(kept, full, atol=1e-6)


def test_prompt_cached_loss_equals_the_full_loss_and_trains_the_adapter():
    """Stopping the gradient at the prompt changes the gradient, never the loss: on a
    small real Llama with a LoRA the cached path reports the full loss and fills grads."""
    from peft import LoraConfig, get_peft_model

    from llmnas_dist.generation.finetune import _backward

    lora = LoraConfig(r=4, lora_alpha=4, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    model = get_peft_model(tiny_llama(2), lora)
    # two examples share a prompt (one cache, repeated over both), a third has its own
    items = [(list(range(1, 12)), 7), ([*range(1, 8), 30, 31], 7), (list(range(3, 9)), 4)]
    full = _backward(model, items, "cpu", 0, prompt_grad=True)
    model.zero_grad()
    cached = _backward(model, items, "cpu", 0, prompt_grad=False)
    assert cached == pytest.approx(full, rel=1e-5)
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)


def test_lora_on_the_last_layers_trains_only_there_and_refuses_more_than_the_model_has():
    from llmnas_dist.errors import ConfigError
    from llmnas_dist.generation.finetune import _backward, _lora_model, last_layers

    base = tiny_llama(4)
    assert last_layers(base, None) is None and last_layers(base, 4) == [0, 1, 2, 3]
    with pytest.raises(ConfigError, match="has 4 layers"):
        last_layers(base, 5)
    tune = FinetuneConfig(r=4, alpha=4, dropout=0.0, target_modules=["q_proj"], lora_layers=2)
    model = _lora_model(base, tune, None)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trained and all(".layers.2." in n or ".layers.3." in n for n in trained), trained
    assert {n.split(".layers.")[1][0] for n in trained} == {"2", "3"}
    _backward(model, [(list(range(1, 12)), 7)], "cpu", 0, prompt_grad=False)
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
