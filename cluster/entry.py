"""What `llmnas run` does around the driver: open the archive, find or create the run,
connect Ray, start the actors, run, record how it ended, print the table.

A run that fails is marked failed (resumable); Ctrl-C marks it stopped. Either way the
actors are stopped and a Ray instance this process started is shut down.
"""

from __future__ import annotations

import logging
import signal
import threading
import traceback
from pathlib import Path

import ray

from cluster.console import log_to_file, stop_file_log
from cluster.driver import Driver
from cluster.factory import connect_ray, evaluators_wanted, start_actors
from cluster.progress import PhaseClock, cycle_rows, cycle_table, found_summary
from db.archive import Archive
from db.contract import ArchiveStore
from db.errors import ArchiveError, NotFound
from llmnas_dist.config import Config, stored_config
from llmnas_dist.errors import PlacementError, UsageError
from llmnas_dist.vocab import RunStatus

log = logging.getLogger(__name__)

PHASES_FILE = "phases.json"  # the run's phase times, next to its driver.log


def open_run(archive: ArchiveStore, cfg: Config, resume: str | None, run_id: str | None) -> Config:
    """The run's id and effective config: a new run, or an existing one to continue."""
    name = resume or run_id
    try:
        run = archive.get_run(name) if name else None
    except NotFound:
        if resume:
            raise UsageError(f"no run {resume!r} in {archive.safe_url} to resume") from None
        run = None
    if run is None:
        return cfg
    if run.status is RunStatus.COMPLETED:
        raise UsageError(f"run {run.id!r} is already completed; start a new one")
    return stored_config(run.config, cfg)


def run_search(
    cfg: Config, *, resume: str | None, run_id: str | None, evaluators: int | None
) -> bool:
    """Run or resume a search; True when it completed."""
    try:
        archive = Archive(cfg.archive)
    except ArchiveError as exc:
        raise UsageError(str(exc)) from None
    try:
        cfg = open_run(archive, cfg, resume, run_id)
        name = resume or run_id
        existing = name is not None and any(r.id == name for r in archive.list_runs())
        run = archive.get_run(name) if existing and name else archive.create_run(cfg, run_id=name)
        if existing:
            archive.finish_run(run.id, RunStatus.RUNNING)
        else:  # the new run's config as stored, with the seed its creation drew
            cfg = stored_config(run.config, cfg)
        log_path = log_to_file(cfg.cluster.run_dir, run.id)
        print(f"run {run.id}: archive {archive.safe_url}", flush=True)
        print(f"  log: {log_path} (resume with: llmnas run --resume {run.id})", flush=True)
        return _drive(cfg, archive, run.id, evaluators)
    finally:
        archive.close()
        stop_file_log()


def _stop_on_sigterm(signum: int, frame: object) -> None:
    """`kill` or `ray job stop` stops a run as Ctrl-C does (marked stopped, its tables
    printed): Ray's own SIGTERM handler aborted the driver with a stack dump (rc 134)."""
    raise KeyboardInterrupt


def _drive(cfg: Config, archive: ArchiveStore, run_id: str, evaluators: int | None) -> bool:
    clock = PhaseClock()
    with clock.phase("Ray start"):
        started_ray = connect_ray(cfg, evaluators or cfg.evaluation.evaluators or 2)
    main = threading.current_thread() is threading.main_thread()  # where handlers may be set
    if main:
        signal.signal(signal.SIGTERM, _stop_on_sigterm)  # after ray.init, which sets its own
    actors = None
    status = RunStatus.FAILED
    try:
        with clock.phase("actors start (engines load in the background)"):
            actors = start_actors(cfg, evaluators_wanted(cfg, evaluators))
        Driver(cfg, archive, run_id, actors, clock).run()
        status = RunStatus.COMPLETED
    except KeyboardInterrupt:
        status = RunStatus.STOPPED
        print(f"\nstopped; resume with: llmnas run --resume {run_id}", flush=True)
    except PlacementError as exc:  # the cluster, not the run: say what to fix, no traceback
        log.error("run %s failed: %s", run_id, exc)
        print(f"run {run_id} failed: {exc}\n  resume with: llmnas run --resume {run_id}")
    except Exception:  # noqa: BLE001 - any failure: record it, say how to resume
        log.error("run %s failed:\n%s", run_id, traceback.format_exc())
        print(f"run {run_id} failed; resume with: llmnas run --resume {run_id}", flush=True)
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        archive.finish_run(run_id, status)
        if actors is not None:
            actors.shutdown()
        if started_ray:
            ray.shutdown()
    print(cycle_table(cycle_rows(archive, run_id)), flush=True)
    print(clock.table(), flush=True)
    clock.write(Path(cfg.cluster.run_dir, run_id, PHASES_FILE))
    print(found_summary(archive, run_id), flush=True)
    return status is RunStatus.COMPLETED
