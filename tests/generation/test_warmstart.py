"""Warm start (theta_0): the cache key, the cache, the examples, and a real tiny training."""

from __future__ import annotations

import json
import shutil
import time
import warnings
from pathlib import Path

import pytest
from adapters import ELITES

from llmnas_dist.admission.delta import apply_output, extract_code
from llmnas_dist.config import AdmissionConfig, FinetuneConfig, GenerationConfig
from llmnas_dist.generation.finetune import METADATA_FILE, train_lora
from llmnas_dist.generation.mutations import DEFAULT_MAX_JACCARD, parent_jaccard
from llmnas_dist.generation.warmstart import (
    ADAPTERS_DIR,
    SHIPPED_ROOT,
    WarmStart,
    cached_warm_start,
    ship_warm_start,
    warm_start_adapter,
    warm_start_examples,
    warm_start_key,
)
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import load_seeds

SEEDS = load_seeds()
SMALL_SEEDS = {name: SEEDS[name] for name in ("plain_cnn", "vit_tiny")}
GEN = GenerationConfig(
    warm_start_per_seed=1, warm_start_epochs=1, warm_start_lr=1e-3, warm_start_full_fraction=0.0
)
TINY = FinetuneConfig(r=4, alpha=8, dropout=0.0, batch_size=2, max_length=1024)
ADM = AdmissionConfig()


def key(gen=GEN, ft=TINY, adm=ADM, dataset="digits", seeds=None) -> str:
    return warm_start_key(gen, ft, adm, dataset, SMALL_SEEDS if seeds is None else seeds)


def test_key_changes_with_every_determining_field():
    base = key()
    assert base == key()  # deterministic
    changed = [
        key(gen=GEN.model_copy(update={"model": "./some-other-model"})),
        key(gen=GEN.model_copy(update={"warm_start_per_seed": 2})),
        key(gen=GEN.model_copy(update={"warm_start_epochs": 2})),
        key(gen=GEN.model_copy(update={"warm_start_lr": 5e-4})),
        key(gen=GEN.model_copy(update={"warm_start_full_fraction": 0.5})),
        key(ft=TINY.model_copy(update={"r": 8})),
        key(ft=TINY.model_copy(update={"alpha": 16})),
        key(ft=TINY.model_copy(update={"dropout": 0.1})),
        key(ft=TINY.model_copy(update={"target_modules": ["q_proj", "v_proj"]})),
        key(adm=ADM.model_copy(update={"tau": 0.8})),
        key(dataset="mnist5k"),
        key(seeds={**SMALL_SEEDS, "plain_cnn": SMALL_SEEDS["plain_cnn"] + "\n# edited\n"}),
        key(seeds={"plain_cnn": SMALL_SEEDS["plain_cnn"]}),
    ]
    assert len({base, *changed}) == len(changed) + 1


def test_key_changes_with_the_taught_operators(monkeypatch):
    from llmnas_dist.generation import warmstart

    before = key()
    monkeypatch.setattr(warmstart, "WARM_START_OPERATORS", ("add_residual_block",))
    assert key() != before


def test_key_ignores_fields_that_do_not_shape_the_adapter():
    assert key() == key(gen=GEN.model_copy(update={"temperature": 0.9, "max_new_tokens": 64}))
    assert key() == key(ft=TINY.model_copy(update={"lr": 3e-5, "epochs": 7}))
    assert key() == key(adm=ADM.model_copy(update={"delta_fuzz": 2}))  # judges answers only


def test_examples_show_canonical_parents_and_teach_novel_deltas_that_apply():
    examples = warm_start_examples(
        GEN.model_copy(update={"warm_start_per_seed": 3}), ADM, "digits", SMALL_SEEDS, build=False
    )
    assert len(examples) >= 4
    canonical = {canonicalize(code, ADM)[0] for code in SMALL_SEEDS.values()}
    shown_seed = 0
    for ex in examples:
        parent = ex.prompt.split("```python\n", 1)[1].split("\n```", 1)[0] + "\n"
        shown_seed += parent in canonical
        assert canonicalize(parent, ADM)[0] == parent  # the archive's form
        child = apply_output(parent, ex.completion)
        assert ex.completion.startswith("<delta>") and ex.completion.endswith("</delta>")
        assert parent_jaccard(parent, child, ADM) < DEFAULT_MAX_JACCARD
    assert shown_seed >= 2


def test_a_share_of_examples_teaches_whole_programs():
    gen = GEN.model_copy(update={"warm_start_per_seed": 3, "warm_start_full_fraction": 0.5})
    examples = warm_start_examples(gen, ADM, "digits", SMALL_SEEDS, build=False)
    full = [ex for ex in examples if ex.completion.startswith("<nn>")]
    assert 0 < len(full) < len(examples)
    for ex in full:
        parent = ex.prompt.split("```python\n", 1)[1].split("\n```", 1)[0] + "\n"
        child = extract_code(ex.completion)
        assert "complete program inside <nn>" in ex.prompt
        assert child != parent and canonicalize(child, ADM)[0] == child
    assert key() != key(gen=gen)
    assert key() == key(ft=TINY.model_copy(update={"full_code_fraction": 0.5}))  # CE updates only


BLOCKS = ("pre_block", "input_gate", "post_block", "input_norm")  # what the operators add


def test_examples_teach_varied_blocks_and_no_mlp_head():
    """bench/operator_bench.py measured an MLP head lowering the default's proxy score (no
    child above its parent): the warm start's children add each block of
    `warmstart.WARM_START_OPERATORS` somewhere, and never a second classifier layer."""
    examples = warm_start_examples(
        GEN.model_copy(update={"warm_start_per_seed": 6}), ADM, "digits", SMALL_SEEDS, build=False
    )
    added: set[str] = set()
    for ex in examples:
        parent = ex.prompt.split("```python\n", 1)[1].split("\n```", 1)[0] + "\n"
        child = apply_output(parent, ex.completion)
        assert child.count("nn.Linear(") == parent.count("nn.Linear(")
        added |= {b for b in BLOCKS if f"self.{b}" in child and f"self.{b}" not in parent}
    assert added == set(BLOCKS)


def test_examples_keep_only_children_that_build_for_the_dataset():
    examples = warm_start_examples(GEN, ADM, "digits", {"plain_cnn": SEEDS["plain_cnn"]})
    assert len(examples) == 1  # per_seed 1, and the child passed the sandboxed build


def fake_adapter(folder: Path, examples: int = 7, loss: float = 0.25) -> None:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    (folder / METADATA_FILE).write_text(json.dumps({"examples": examples, "train_loss": loss}))


def test_a_cached_adapter_is_reused_without_training(tmp_path):
    folder = tmp_path / ADAPTERS_DIR / f"warm-start-{key()[:24]}"
    fake_adapter(folder)
    started = time.perf_counter()
    ws = warm_start_adapter(GEN, TINY, ADM, "digits", cache=tmp_path, seeds=SMALL_SEEDS)
    assert time.perf_counter() - started < 1.0
    assert ws == WarmStart(str(folder), True, 7, 0.25, ws.seconds, key())
    assert ws.seconds < 1.0


def test_a_staging_leftover_is_never_taken_for_a_cached_adapter(tmp_path, monkeypatch):
    import llmnas_dist.generation.warmstart as warmstart

    fake_adapter(tmp_path / ADAPTERS_DIR / f".warm-start-{key()[:24]}-killed")
    trained = []

    def no_training(*args, **kwargs):
        trained.append(True)
        raise RuntimeError("training started")

    monkeypatch.setattr(warmstart, "train_lora", no_training)
    with pytest.raises(RuntimeError, match="training started"):
        warm_start_adapter(
            GEN, TINY, ADM, "digits", cache=tmp_path, seeds={"plain_cnn": SEEDS["plain_cnn"]}
        )
    assert trained
    # the failed attempt left neither a final folder nor its staging folder behind
    left = sorted(p.name for p in (tmp_path / ADAPTERS_DIR).iterdir())
    assert left == [f".warm-start-{key()[:24]}-killed"]


def test_warm_start_needs_seeds(tmp_path):
    with pytest.raises(ValueError, match="at least one seed"):
        warm_start_adapter(GEN, TINY, ADM, "digits", cache=tmp_path, seeds={})


def test_finetuner_warm_start_refuses_another_model():
    from workers.finetuner import Finetuner

    with pytest.raises(ValueError, match="would not fit one base model"):
        Finetuner("./another-model", TINY).warm_start(GEN, ADM, "digits")


def test_finetuner_warm_start_returns_the_cached_adapter(tmp_path, monkeypatch):
    from workers.finetuner import Finetuner

    monkeypatch.setenv("LLMNAS_CACHE", str(tmp_path))
    folder = tmp_path / ADAPTERS_DIR / f"warm-start-{key(seeds=SEEDS)[:24]}"
    fake_adapter(folder, examples=60, loss=0.1)
    out = Finetuner(GEN.model, TINY).warm_start(GEN, ADM, "digits")
    assert out.path == str(folder) and out.cached is True
    assert out.n_examples == 60 and out.train_loss == 0.1 and out.seconds < 1.0


def default_key() -> str:
    """The key of the default run's warm start, computed as the run and the ship script do."""
    from llmnas_dist.config import load_config
    from llmnas_dist.seeds import seed_population

    cfg = load_config()
    return warm_start_key(
        cfg.generation,
        cfg.finetune,
        cfg.admission,
        cfg.ce.dataset,
        seed_population(cfg.ce),
        cfg.evaluation.input_size,
    )


def test_the_package_ships_the_default_configurations_warm_start():
    """A first default run installs this adapter instead of training for 15 minutes. A
    change to anything the key holds fails here until `deploy/ship_warm_start.py` ships the
    adapter of the new key."""
    k = default_key()
    shipped = sorted(p.name for p in SHIPPED_ROOT.glob("warm-start-*"))
    assert shipped == [f"warm-start-{k[:24]}"], (
        f"the shipped warm start {shipped} is not the default's ({k[:24]}): run "
        "`.venv/bin/python deploy/ship_warm_start.py` and commit llmnas_dist/generation/warm_starts"
    )
    folder = SHIPPED_ROOT / shipped[0]
    meta = json.loads((folder / METADATA_FILE).read_text())
    assert meta["key"] == k and meta["adapter_dir"] is None and meta["base_model_path"] is None
    config = json.loads((folder / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == meta["base_model"]  # a name, not a path
    assert (folder / "adapter_model.safetensors").stat().st_size > 1_000_000


def shipped_from(tmp_path: Path, k: str) -> Path:
    """A fake trained adapter (with this machine's paths in it), shipped into tmp_path/ship."""
    trained = tmp_path / "trained"
    fake_adapter(trained)
    (trained / "adapter_config.json").write_text(
        json.dumps({"r": 4, "base_model_name_or_path": str(tmp_path / "model")})
    )
    (trained / "adapter_model.safetensors").write_bytes(b"weights")
    return ship_warm_start(trained, k, "smollm2-135m-instruct", root=tmp_path / "ship")


def test_a_shipped_adapter_is_installed_into_the_cache_without_training(tmp_path, monkeypatch):
    import llmnas_dist.generation.warmstart as warmstart

    def no_training(*args, **kwargs):
        raise RuntimeError("training started")

    monkeypatch.setattr(warmstart, "train_lora", no_training)
    dest = shipped_from(tmp_path, key())
    assert not any(str(tmp_path) in f.read_text() for f in dest.glob("*.json"))
    cache = tmp_path / "cache"
    ws = warm_start_adapter(
        GEN, TINY, ADM, "digits", cache=cache, seeds=SMALL_SEEDS, shipped=dest.parent
    )
    folder = cache / ADAPTERS_DIR / dest.name
    assert ws == WarmStart(str(folder), True, 7, 0.25, ws.seconds, key())
    assert json.loads((folder / METADATA_FILE).read_text())["adapter_dir"] == str(folder.resolve())
    assert (folder / "adapter_model.safetensors").read_bytes() == b"weights"
    assert sorted(p.name for p in folder.parent.iterdir()) == [dest.name]  # no staging left
    # `llmnas generate` finds it too, in a cache of its own
    other = tmp_path / "other-cache"
    found = cached_warm_start(GEN, TINY, ADM, "digits", other, SMALL_SEEDS, shipped=dest.parent)
    assert found == other / ADAPTERS_DIR / dest.name


def test_an_adapter_shipped_for_another_key_is_not_taken(tmp_path, monkeypatch):
    import llmnas_dist.generation.warmstart as warmstart

    def no_training(*args, **kwargs):
        raise RuntimeError("training started")

    monkeypatch.setattr(warmstart, "train_lora", no_training)
    dest = shipped_from(tmp_path, key())
    # the folder name matches (the first 24 hex digits) but the full key does not
    meta = json.loads((dest / METADATA_FILE).read_text())
    (dest / METADATA_FILE).write_text(json.dumps({**meta, "key": key()[:24] + "0" * 40}))
    assert (
        cached_warm_start(GEN, TINY, ADM, "digits", tmp_path / "c", SMALL_SEEDS, None, dest.parent)
        is None
    )
    with pytest.raises(RuntimeError, match="training started"):
        warm_start_adapter(
            GEN, TINY, ADM, "digits", cache=tmp_path / "c", seeds=SMALL_SEEDS, shipped=dest.parent
        )


def test_shipping_replaces_the_adapter_shipped_before(tmp_path):
    first = shipped_from(tmp_path, "a" * 64)
    shutil.rmtree(tmp_path / "trained")
    second = shipped_from(tmp_path, "b" * 64)
    assert sorted(p.name for p in second.parent.iterdir()) == [second.name]
    assert first != second and not first.exists()


@pytest.mark.integration
def test_tiny_warm_start_trains_caches_and_changes_generations(tmp_path):
    from llmnas_dist.generation.finetune import read_metadata

    seeds = {"plain_cnn": SEEDS["plain_cnn"]}
    gen_cfg = GEN.model_copy(update={"warm_start_per_seed": 2})
    ws = warm_start_adapter(gen_cfg, TINY, ADM, "digits", cache=tmp_path, seeds=seeds)
    assert not ws.cached and ws.n_examples == 2 and ws.train_loss > 0
    folder = Path(ws.path)
    assert folder.parent == tmp_path / ADAPTERS_DIR and (folder / "adapter_config.json").is_file()
    assert read_metadata(folder)["adapter_dir"] == str(folder.resolve())
    assert json.loads((folder / "adapter_config.json").read_text())["r"] == TINY.r
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no staging left

    again = warm_start_adapter(gen_cfg, TINY, ADM, "digits", cache=tmp_path, seeds=seeds)
    assert again.cached and again.path == ws.path and again.seconds < 1.0

    # shipped and installed into another cache, it is the same adapter
    ship = ship_warm_start(folder, ws.key, gen_cfg.model, root=tmp_path / "ship")
    other = tmp_path / "other"
    installed = warm_start_adapter(
        gen_cfg, TINY, ADM, "digits", cache=other, seeds=seeds, shipped=ship.parent
    )
    assert installed.cached and Path(installed.path).parent == other / ADAPTERS_DIR
    weights_file = "adapter_model.safetensors"
    assert (Path(installed.path) / weights_file).read_bytes() == (
        folder / weights_file
    ).read_bytes()
    assert read_metadata(installed.path)["train_loss"] == ws.train_loss

    # a CE fine-tune continues the installed adapter, whose config names the base model by
    # name: saving it asked the Hub whether the vocabulary was resized (offline, two peft
    # warnings a save on a default run's console, from the fine-tune actor)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        train_lora(gen_cfg.model, ELITES, TINY, tmp_path / "ce", init_adapter=installed.path)
    assert not [str(w.message) for w in caught if "peft" in w.filename]

    # the adapter changes the model: training moved LoRA's B matrices off their zero init
    from safetensors.torch import load_file

    weights = load_file(str(folder / "adapter_model.safetensors"))
    lora_b = [w for name, w in weights.items() if "lora_B" in name]
    assert lora_b and max(float(w.abs().max()) for w in lora_b) > 0.0


def test_node_threads_uses_every_core_and_restores_the_setting():
    import os

    import torch

    from workers.threads import node_threads

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with node_threads():
            assert torch.get_num_threads() == len(os.sched_getaffinity(0))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
