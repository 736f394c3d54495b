"""What `llmnas run` prints and what it only logs.

The console carries this project's own lines (the run header, progress, warnings, the
cycle table, what was found) and any error; library, Ray and alembic logs and Python
warnings go only to `<run_dir>/<run>/driver.log`. `--verbose` puts everything back on the
console. Model-loading progress bars are turned off (in this process and, for a Ray
instance this process starts, in its actors, which inherit the environment).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import sys
from pathlib import Path

import transformers.utils.logging as hf_logging

OWN_PACKAGES = ("cluster", "llmnas_dist", "workers", "db")
FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
# read by huggingface_hub and transformers when they load a model
# inherited by the Ray workers this process starts (their output streams to the console):
# no model-loading or GGUF-conversion bars, no library deprecation notices. The driver's
# own warnings still reach driver.log; Ray keeps each worker's output in its session logs
QUIET_ENV = {
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",
    "TRANSFORMERS_VERBOSITY": "error",
    "TQDM_DISABLE": "1",
    "PYTHONWARNINGS": "ignore::FutureWarning,ignore::DeprecationWarning",
}
DRIVER_LOG = "driver.log"
EARLY_LINES = 10_000  # kept until the run's log file exists


class _OwnOrError(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        own = record.name.split(".", 1)[0] in OWN_PACKAGES
        return own or record.levelno >= logging.ERROR


class _ConsoleFormat(logging.Formatter):
    """An INFO line reads as the progress lines do (its message only); a warning or an
    error says what it is and where it came from. driver.log keeps the full FORMAT."""

    def format(self, record: logging.LogRecord) -> str:
        if record.levelno < logging.WARNING:
            return record.getMessage()
        return f"{record.levelname} {record.name}: {super().format(record)}"


def _replace_handler(name: str, handler: logging.Handler | None) -> None:
    """Install `handler` on the root logger under `name`, closing the one it replaces
    (a process may run several commands: tests do)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == name]:
        root.removeHandler(old)
        old.close()
    if handler is not None:
        handler.set_name(name)
        handler.setFormatter(logging.Formatter(FORMAT))
        root.addHandler(handler)


def configure_console(verbose: bool) -> None:
    """INFO and above are logged; the console shows what `verbose` asks for. Call it after
    importing ray."""
    logging.getLogger().setLevel(logging.INFO)
    logging.captureWarnings(True)
    console = logging.StreamHandler(sys.stderr)
    if not verbose:
        console.addFilter(_OwnOrError())
        for key, value in QUIET_ENV.items():
            os.environ.setdefault(key, value)
    _replace_handler("llmnas-console", console)
    if not verbose:
        console.setFormatter(_ConsoleFormat())
    # what is logged before the run has an id (opening the archive: alembic) waits here
    # for the run's driver.log
    _replace_handler("llmnas-early", logging.handlers.MemoryHandler(EARLY_LINES, 100))
    # importing ray gives its logger a stderr handler of its own that bypasses the root:
    # its lines then reach the console only through ours (and the file)
    ray_log = logging.getLogger("ray")
    for handler in list(ray_log.handlers):
        ray_log.removeHandler(handler)
    ray_log.propagate = True
    # transformers does the same once any of its modules first logs, and stops its records
    # propagating: a library error then skipped driver.log and our console filter (seen in
    # one test order). Configure it now, after QUIET_ENV set its verbosity, through the root
    hf_logging.disable_default_handler()
    hf_logging.enable_propagation()


def log_to_file(run_dir: str, run_id: str) -> Path:
    """Everything logged from now on also goes to <run_dir>/<run>/driver.log (appended)."""
    path = Path(run_dir) / run_id / DRIVER_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    file = logging.FileHandler(path, encoding="utf-8")
    _replace_handler("llmnas-file", file)
    for early in logging.getLogger().handlers:
        if isinstance(early, logging.handlers.MemoryHandler) and early.get_name() == "llmnas-early":
            early.setTarget(file)
    _replace_handler("llmnas-early", None)  # closing it flushes it into the file
    return path


def stop_file_log() -> None:
    _replace_handler("llmnas-file", None)
