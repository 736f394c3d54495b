"""Config: typed sections, precedence, clear errors, every shipped config file loads."""

from __future__ import annotations

import argparse
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from fixtures import ROOT
from pydantic import BaseModel

import llmnas_dist.config
from cluster import cli as llmnas_cli
from cluster import run_cli
from llmnas_dist.cli.main import build_parser, main
from llmnas_dist.config import (
    ARCHIVE_URL_ENV,
    Config,
    build_config,
    default_config_path,
    dump_config,
    load_config,
)
from llmnas_dist.errors import ConfigError

REPO = ROOT
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
    embedded = yaml.safe_load(default_config_path().read_text())["archive"]["url"]
    assert load_config(environ={}).archive.url == embedded
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
        [sys.executable, "-m", "llmnas_dist.cli.main", "config", "show", "--config", str(bad)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "ce.rho" in proc.stderr


class _Resolved(Exception):
    """Raised by the recording build_config: the command got this far, with this config."""

    def __init__(self, config: Config) -> None:
        self.config = config


def _commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()) -> Iterator:
    """Every leaf command of the `llmnas` parser, with the destinations it requires."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not subs:
        yield prefix, parser
        return
    for name, sub in subs[0].choices.items():
        yield from _commands(sub, (*prefix, name))


# A value for each required argument of any command: enough to reach the config
PLACEHOLDERS = {
    "program": "llmnas_dist/seeds/plain_cnn.py",
    "parent": "llmnas_dist/seeds/plain_cnn.py",
    "run": "some-run",
    "count": "2",
    "hash_prefix": "abcd",
    "query": "select 1",
    "source": "llmnas_dist/seeds",
}


def _argv(words: tuple[str, ...], parser: argparse.ArgumentParser) -> list[str]:
    argv = list(words)
    for action in parser._actions:
        if not action.option_strings and action.dest != "help":
            argv.append(PLACEHOLDERS[action.dest])
        elif action.required:
            argv += [action.option_strings[0], PLACEHOLDERS[action.dest]]
    return argv


def test_every_command_without_config_uses_what_config_show_prints(monkeypatch, capsys):
    """`llmnas config show` prints exactly the config every command (run included) uses
    without --config: the embedded default file, not the field defaults."""
    monkeypatch.delenv(ARCHIVE_URL_ENV, raising=False)
    monkeypatch.chdir(REPO)
    assert llmnas_cli.main(["config", "show"]) == 0
    shown = build_config(yaml.safe_load(capsys.readouterr().out))
    assert shown == load_config(default_config_path()) != Config()

    real_build = llmnas_dist.config.build_config

    def recording_build(data: dict, source: str = "(inline)") -> Config:
        raise _Resolved(real_build(data, source))

    monkeypatch.setattr(llmnas_dist.config, "build_config", recording_build)
    commands = list(_commands(build_parser((run_cli,))))
    assert len(commands) >= 14
    for words, parser in commands:
        if words == ("config", "check"):  # its config is the FILE it is given
            continue
        with pytest.raises(_Resolved) as resolved:
            llmnas_cli.main(_argv(words, parser))
        assert resolved.value.config == shown, " ".join(words)
