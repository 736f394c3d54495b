"""`llmnas generate`: usage errors before any model loads (fast); real proposals (integration)."""

from __future__ import annotations

import argparse
import json

import pytest

from llmnas_dist.cli.main import main
from llmnas_dist.seeds import load_seeds


@pytest.fixture
def parent(tmp_path):
    path = tmp_path / "parent.py"
    path.write_text(load_seeds()["plain_cnn"])
    return path


@pytest.fixture
def config(tmp_path):
    path = tmp_path / "cfg.yaml"
    path.write_text(
        "generation:\n  max_new_tokens: 48\n  temperature: 0.8\n"
        f"archive:\n  url: sqlite:///{tmp_path / 'absent.db'}\n"
    )
    return path


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--n", "0"], "--n must be between"),
        (["--adapter", "."], "not a LoRA adapter folder"),
        (["--dataset", "nope"], "nope"),
    ],
)
def test_bad_usage_exits_2_before_loading_a_model(parent, config, capsys, extra, message):
    assert main(["generate", "--config", str(config), "--parent", str(parent), *extra]) == 2
    assert message in capsys.readouterr().err


def test_adapter_without_a_rank_exits_2_before_loading_a_model(parent, config, tmp_path, capsys):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"lora_alpha": 8}')
    argv = ["generate", "--config", str(config), "--parent", str(parent)]
    assert main([*argv, "--adapter", str(adapter)]) == 2
    assert "does not state the adapter's LoRA rank" in capsys.readouterr().err


def test_missing_or_invalid_parent_exits_2(tmp_path, config, capsys):
    assert main(["generate", "--config", str(config), "--parent", str(tmp_path / "x.py")]) == 2
    assert "parent program not found" in capsys.readouterr().err
    bad = tmp_path / "bad.py"
    bad.write_text("import os\nos.system('true')\n")
    assert main(["generate", "--config", str(config), "--parent", str(bad)]) == 2
    assert "not a valid program" in capsys.readouterr().err


@pytest.mark.integration
def test_generate_prints_each_proposal_with_its_verdict(parent, config, capsys):
    argv = ["generate", "--config", str(config), "--parent", str(parent), "--n", "2", "--json"]
    status = main(argv)
    captured = capsys.readouterr()
    proposals = json.loads(captured.out)  # the adapter line goes to stderr
    assert "sampling with the" in captured.err
    assert len(proposals) == 2
    for p in proposals:
        assert {"text", "verdict", "error_class", "message"} <= set(p)
        assert p["verdict"] in ("admitted", "rejected")
        assert (p["error_class"] is None) == (p["verdict"] == "admitted")
        assert 0 < p["output_tokens"] <= 48
        # delta mode samples under the parent's grammar: the answer applies unless it was
        # cut off by the token budget, which its message then says
        assert p["constrained"] and p["mode"] == "delta"
        finished = p["text"].rstrip().endswith("</delta>")
        assert finished or "cut off by max_new_tokens" in (p["message"] or "")
        if finished:
            assert p["error_class"] not in ("no_delta", "bad_hunk", "hunk_not_found")
    admitted = any(p["verdict"] == "admitted" for p in proposals)
    assert status == (0 if admitted else 1)


def test_without_adapter_it_samples_with_the_cached_warm_start(tmp_path, monkeypatch, capsys):
    from llmnas_dist.cli.generate import _adapter
    from llmnas_dist.config import load_config
    from llmnas_dist.generation.warmstart import warm_start_key

    monkeypatch.setenv("LLMNAS_CACHE", str(tmp_path / "cache"))
    cfg = load_config(None)
    size = cfg.evaluation.input_size  # the run trains children at this size
    args = argparse.Namespace(adapter=None, base_model=False)
    assert _adapter(args, cfg, "digits") is None  # nothing cached yet: the base model
    assert "base model: no warm-start adapter is cached" in capsys.readouterr().err
    key = warm_start_key(cfg.generation, cfg.finetune, cfg.admission, "digits", load_seeds(), size)
    folder = tmp_path / "cache" / "adapters" / f"warm-start-{key[:24]}"
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text("{}")
    assert _adapter(args, cfg, "digits") == str(folder)
    assert "cached warm-start adapter" in capsys.readouterr().err
    assert _adapter(args, cfg, "animal10k") is None  # trained for another dataset: not used
    assert _adapter(argparse.Namespace(adapter=None, base_model=True), cfg, "digits") is None
    given = argparse.Namespace(adapter="/some/adapter", base_model=False)
    assert _adapter(given, cfg, "digits") == "/some/adapter"
