"""Config: typed sections, precedence, clear errors, every shipped config file loads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from pydantic import BaseModel

from llmnas_dist.cli import main
from llmnas_dist.config import (
    ARCHIVE_URL_ENV,
    Config,
    build_config,
    dump_config,
    load_config,
)
from llmnas_dist.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
SHIPPED_CONFIGS = sorted(
    [*REPO.glob("llmnas_dist/configs/*.yaml"), *REPO.glob("deploy/configs/*.yaml")]
)


def _all_sections(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = [model]
    for field in model.model_fields.values():
        sub = field.annotation
        if isinstance(sub, type) and issubclass(sub, BaseModel):
            found.extend(_all_sections(sub))
    return found


def test_every_field_has_a_description_and_forbids_extras():
    sections = _all_sections(Config)
    assert len(sections) == 9  # Config + its eight component sections
    for section in sections:
        assert section.model_config.get("extra") == "forbid", section.__name__
        for name, field in section.model_fields.items():
            assert field.description, f"{section.__name__}.{name} has no description"


def test_shipped_config_files_exist():
    names = {p.name for p in SHIPPED_CONFIGS}
    assert {"default.yaml", "gpu-cluster.yaml", "cpu-cluster.yaml"} <= names


@pytest.mark.parametrize("path", SHIPPED_CONFIGS, ids=lambda p: p.name)
def test_every_shipped_config_loads_and_round_trips(path: Path):
    cfg = load_config(path, environ={})
    again = build_config(yaml.safe_load(dump_config(cfg)))
    assert again == cfg
    raw = yaml.safe_load(path.read_text())
    # Every value written in the file is the value in effect (no silent renames/drops).
    for section, values in raw.items():
        for key, value in values.items():
            assert getattr(getattr(cfg, section), key) == value, f"{section}.{key}"


def test_precedence_defaults_file_env_flag(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("archive:\n  url: sqlite:///from-file.db\nce:\n  rho: 0.5\n")
    assert load_config(environ={}).archive.url == Config().archive.url
    assert load_config(f, environ={}).archive.url == "sqlite:///from-file.db"
    env = {ARCHIVE_URL_ENV: "sqlite:///from-env.db"}
    assert load_config(f, environ=env).archive.url == "sqlite:///from-env.db"
    flag = load_config(f, archive_url="sqlite:///from-flag.db", environ=env)
    assert flag.archive.url == "sqlite:///from-flag.db"
    assert flag.ce.rho == 0.5  # the rest of the file still applies


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"ce": {"rho": 1.5}}, "ce.rho"),
        ({"ce": {"rhoo": 0.2}}, "ce.rhoo: unknown field"),
        ({"generation": {"max_new_tokens": 4096, "max_model_len": 2048}}, "max_new_tokens (4096)"),
        ({"evaluation": {"epochs": None}}, "exactly one of epochs and budget_s"),
        ({"evaluation": {"budget_s": 30}}, "exactly one of epochs and budget_s"),
        ({"archive": {"url": "mysql://x/y"}}, "unsupported database URL scheme 'mysql'"),
        ({"ce": {"min_elites": 100, "cycles": 1, "candidates_per_cycle": 5}}, "ce.min_elites"),
        ({"generation": {"backend": "llamacpp"}}, "generation.backend"),
        ({"nonsense": {}}, "nonsense: unknown field"),
    ],
)
def test_bad_config_names_the_field(data: dict, expected: str):
    with pytest.raises(ConfigError) as err:
        build_config(data, "test.yaml")
    assert expected in str(err.value)
    assert "test.yaml" in str(err.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("ce: [1, 2", "not valid YAML"),
        ("- a\n- b\n", "must hold a mapping"),
        ("archive: 3\n", "archive"),
    ],
)
def test_bad_yaml_is_a_config_error(tmp_path: Path, text: str, expected: str):
    f = tmp_path / "bad.yaml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=expected):
        load_config(f, archive_url="sqlite:///x.db", environ={})


def test_config_show_prints_effective_yaml(capsys, monkeypatch, tmp_path: Path):
    monkeypatch.setenv(ARCHIVE_URL_ENV, "sqlite:///env.db")
    f = tmp_path / "c.yaml"
    f.write_text("ce:\n  cycles: 7\n")
    assert main(["config", "show", "--config", str(f)]) == 0
    shown = yaml.safe_load(capsys.readouterr().out)
    assert shown["ce"]["cycles"] == 7
    assert shown["archive"]["url"] == "sqlite:///env.db"
    assert build_config(shown) == load_config(f)


def test_config_check_ok_and_bad(capsys, tmp_path: Path):
    good = tmp_path / "good.yaml"
    good.write_text("ce:\n  cycles: 2\n")
    assert main(["config", "check", str(good)]) == 0
    bad = tmp_path / "bad.yaml"
    bad.write_text("finetune:\n  r: 0\n")
    assert main(["config", "check", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "finetune.r" in err and "greater than or equal to 1" in err


def test_bad_config_on_the_command_line_has_no_traceback(tmp_path: Path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("ce:\n  rho: -1\n")
    proc = subprocess.run(
        [sys.executable, "-m", "llmnas_dist.cli", "config", "show", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "ce.rho" in proc.stderr
