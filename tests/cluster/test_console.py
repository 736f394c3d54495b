"""`llmnas run`'s console: the project's own lines and errors; everything in driver.log."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray  # noqa: F401 - as in `llmnas run`: ray is imported before the console is set
import transformers.utils.logging as hf_logging

from cluster.console import QUIET_ENV, configure_console, log_to_file, stop_file_log


@pytest.fixture
def root_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    for key in QUIET_ENV:
        monkeypatch.delenv(key, raising=False)
    # an earlier `llmnas run` in this process hooked warnings into logging, and pytest has
    # since restored warnings.showwarning: unhook so the command under test hooks afresh
    logging.captureWarnings(False)
    yield
    stop_file_log()
    logging.captureWarnings(False)
    for h in root.handlers:
        if h not in handlers:
            root.removeHandler(h)
    root.setLevel(level)


def _emit() -> None:
    logging.getLogger("alembic.runtime.migration").info("Running upgrade 0003 -> 0004")
    logging.getLogger("ray").warning("Token authentication is enabled")
    logging.getLogger("cluster.driver").info("warm start: step 3/72")
    logging.getLogger("transformers.modeling_utils").error("weights missing")
    warnings.warn("an old api", FutureWarning, stacklevel=1)


def test_quiet_console_keeps_own_lines_and_errors_the_file_keeps_all(
    root_logging: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    # as after any earlier transformers log line in this process: its own stderr handler,
    # its records not propagating to the root
    hf_logging.enable_default_handler()
    hf_logging.disable_propagation()
    configure_console(verbose=False)
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    path = log_to_file(str(tmp_path), "run-1")  # the line above was logged before the file
    _emit()
    stop_file_log()
    console = capsys.readouterr().err
    assert "warm start: step 3/72" in console and console.count("weights missing") == 1
    # an INFO line reads as a progress line; an error names its level and logger
    lines = console.splitlines()
    assert "warm start: step 3/72" in lines, lines
    assert "ERROR transformers.modeling_utils: weights missing" in lines, lines
    for hidden in ("Context impl", "Running upgrade", "Token authentication", "an old api"):
        assert hidden not in console, hidden
    assert path == tmp_path / "run-1" / "driver.log"
    logged = path.read_text()
    for line in (
        "Context impl", "Running upgrade", "Token auth", "step 3/72", "an old api",
        "weights missing",
    ):  # fmt: skip
        assert line in logged, line
    assert all(os.environ[k] == v for k, v in QUIET_ENV.items())


def test_verbose_console_shows_everything(
    root_logging: None, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    configure_console(verbose=True)
    configure_console(verbose=True)  # a second command in one process: one console handler
    _emit()
    console = capsys.readouterr().err
    assert console.count("Running upgrade") == 1
    assert "Token authentication" in console and "an old api" in console
    assert not any(k in os.environ for k in QUIET_ENV)


def test_quiet_env_silences_bars_and_deprecations_in_a_new_interpreter() -> None:
    # Ray workers are new interpreters that inherit the environment: what QUIET_ENV does
    # there is what the console of a run shows from its actors
    script = (
        "import warnings\nfrom tqdm.auto import tqdm\n"
        "warnings.warn('is deprecated', FutureWarning)\n"
        "for _ in tqdm(range(3), desc='Converting tensors'):\n    pass\n"
        "warnings.warn('a real problem', RuntimeWarning)\n"
    )
    base = {k: v for k, v in os.environ.items() if k not in QUIET_ENV}

    def stderr(env: dict[str, str]) -> str:
        run = subprocess.run(
            [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert run.returncode == 0, run.stderr
        return run.stderr

    loud, quiet = stderr(base), stderr(base | QUIET_ENV)
    assert "is deprecated" in loud and "Converting tensors" in loud
    assert "is deprecated" not in quiet and "Converting tensors" not in quiet
    assert "a real problem" in quiet  # other warnings still show
