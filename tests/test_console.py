"""`llmnas run`'s console: the project's own lines and errors; everything in driver.log."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
import ray  # noqa: F401 - as in `llmnas run`: ray is imported before the console is set

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
    configure_console(verbose=False)
    logging.getLogger("alembic.runtime.migration").info("Context impl SQLiteImpl.")
    path = log_to_file(str(tmp_path), "run-1")  # the line above was logged before the file
    _emit()
    stop_file_log()
    console = capsys.readouterr().err
    assert "warm start: step 3/72" in console and "weights missing" in console
    for hidden in ("Context impl", "Running upgrade", "Token authentication", "an old api"):
        assert hidden not in console, hidden
    assert path == tmp_path / "run-1" / "driver.log"
    logged = path.read_text()
    for line in ("Context impl", "Running upgrade", "Token auth", "step 3/72", "an old api"):
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
