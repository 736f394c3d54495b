"""Run generated programs in a confined child process: `run_in_sandbox`.

The parent never imports or executes a program. Each run is a supervisor (forked by the
zygote, see llmnas_dist.sandbox.zygote, or a fresh `python -I -m llmnas_dist.sandbox.child`)
in its own session and private temporary working directory, with a scrubbed environment
(llmnas_dist.sandbox.launch), so no database URL, token or Ray address is inherited. The
child (see llmnas_dist.sandbox.child) adds rlimits, network/PID (and user) namespaces, a drop
to `nobody` when root, and Landlock, as far as the kernel allows: `sandbox_capabilities()`
says what is active here. A GPU run differs from a CPU run only by its grant
(llmnas_dist.sandbox.gpus).

This module holds the run's limits (`SandboxLimits`), the machine's isolation
(`SandboxCapabilities`), and the run itself: the parent reads stdout+stderr and the result
pipe concurrently, keeps only a bounded tail of the output, kills the whole process group
and the worker (by pidfd, even if it left the group) on timeout, and validates the result
frames strictly: unknown keys, wrong types, error classes outside the runtime set, or
oversized data make the run CRASHED, never a verdict the program chose. Residual risk: a
program that gets past the static checks runs arbitrary Python in the worker and can
misreport its own measurements (parameter count, output shape) to the supervisor; it cannot
forge the supervisor's frames, reach the parent, other runs, secrets, the network or files
outside its directory (given the kernel features that `sandbox_capabilities()` reports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import selectors
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import Sequence
from typing import IO, Any, cast

from llmnas_dist.config import AdmissionConfig, EvaluationConfig
from llmnas_dist.errors import ErrorClass, truncate
from llmnas_dist.sandbox.child.confine import NOBODY
from llmnas_dist.sandbox.child.tasks import TASKS
from llmnas_dist.sandbox.gpus import GpuGrant, check_gpu_ids, gpu_grant
from llmnas_dist.sandbox.launch import STARTUP_TIMEOUT_S, child_command, child_env, confinement
from llmnas_dist.sandbox.zygote import spawn_via_zygote

log = logging.getLogger(__name__)

EXIT_GRACE_S = 1.0  # after the child exits, how long leftover holders of its pipes may keep them
MAX_RESULT_BYTES = 1024 * 1024
MAX_REQUEST_BYTES = 16 * 1024 * 1024
RUNTIME_ERROR_CLASSES = {
    c.value: c
    for c in (
        ErrorClass.BUILD_FAILED,
        ErrorClass.OUT_OF_MEMORY,
        ErrorClass.TIMEOUT,
        ErrorClass.CRASHED,
    )
}
USE_ZYGOTE = True  # fork supervisors from a pre-warmed process (False: a fresh interpreter each)


class SandboxError(RuntimeError):
    """The sandbox itself failed (cannot start or set up the child): not the program's fault."""


@dataclasses.dataclass(frozen=True)
class SandboxLimits:
    """Resource limits of one sandboxed run."""

    timeout_s: float = 60.0  # wall clock, from the moment the program starts
    memory_mb: int = 4096  # address space of the program's process (torch itself is ~0.7 GB)
    cpu_time_s: float = 61.0  # CPU seconds of the program's process
    max_processes: int = 64  # processes + threads of the sandbox's uid
    max_file_bytes: int = 64 * 1024 * 1024  # largest file the program may write
    max_output_bytes: int = 65_536  # tail of stdout+stderr kept
    threads: int = 1  # torch / OpenMP / BLAS threads

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise ValueError(
                    f"SandboxLimits.{field.name} must be a positive number, got {value!r}"
                )
            if not math.isfinite(value):
                raise ValueError(f"SandboxLimits.{field.name} must be finite, got {value!r}")

    @classmethod
    def from_admission(cls, cfg: AdmissionConfig) -> SandboxLimits:
        return cls(
            timeout_s=cfg.build_timeout_s,
            memory_mb=cfg.memory_limit_mb,
            cpu_time_s=math.ceil(cfg.build_timeout_s) + 1,
            max_output_bytes=cfg.max_output_bytes,
            threads=1,
        )

    @classmethod
    def from_evaluation(cls, cfg: EvaluationConfig) -> SandboxLimits:
        threads = max(1, int(cfg.cpus_per_evaluator))
        return cls(
            timeout_s=cfg.timeout_s,
            memory_mb=cfg.memory_limit_mb,
            cpu_time_s=math.ceil(cfg.timeout_s * threads) + 1,
            max_file_bytes=1024 * 1024 * 1024,
            threads=threads,
        )

    def with_deadline(self, seconds: float) -> SandboxLimits:
        """The same limits with a wall-clock deadline (CPU time scaled alike)."""
        return dataclasses.replace(
            self, timeout_s=seconds, cpu_time_s=math.ceil(seconds * self.threads) + 1
        )


@dataclasses.dataclass(frozen=True)
class SandboxCapabilities:
    """The isolation this machine gives a sandboxed program."""

    namespaces: str  # "root" (net+pid namespaces as root), "user" (inside a user namespace), "none"
    landlock_abi: int  # 0: no Landlock, so no filesystem confinement beyond the uid
    drop_uid: bool  # the program runs as nobody (the parent is root)
    own_proc: bool  # a GPU run's PID namespace gets its own /proc (confine.mount_own_proc)

    @property
    def network_isolated(self) -> bool:
        return self.namespaces != "none" or self.landlock_abi >= 4

    @property
    def filesystem_confined(self) -> bool:
        return self.landlock_abi > 0


@functools.cache
def sandbox_capabilities() -> SandboxCapabilities:
    """Probe once (in a throwaway child) what the kernel allows; warn about what is missing."""
    proc = subprocess.run(
        child_command("--probe"),
        env=child_env(tempfile.gettempdir(), 1),
        cwd=tempfile.gettempdir(),
        capture_output=True,
        timeout=60,
        check=False,
    )
    if proc.returncode != 0:
        raise SandboxError(
            f"sandbox probe failed: {truncate(proc.stderr.decode(errors='replace'), 500)}"
        )
    data = json.loads(proc.stdout)
    caps = SandboxCapabilities(
        namespaces=str(data["namespaces"]),
        landlock_abi=int(data["landlock_abi"]),
        drop_uid=bool(data["drop_uid"]),
        own_proc=bool(data["own_proc"]),
    )
    if caps.namespaces == "none":
        log.warning(
            "sandbox: no network/PID namespaces on this machine; programs can reach the network"
        )
    if not caps.filesystem_confined:
        log.warning("sandbox: no Landlock; file access is limited only by the program's uid")
    return caps


@functools.cache
def _warn_gpu_without_own_proc() -> None:
    log.warning(
        "sandbox: cannot mount a /proc of our own here; CUDA does not start in a GPU run's "
        "PID namespace without one (its programs fall back to the CPU)"
    )


def _make_workdir(caps: SandboxCapabilities) -> str:
    workdir = tempfile.mkdtemp(prefix="llmnas-sandbox-")
    if caps.drop_uid:
        os.chown(workdir, NOBODY, NOBODY)
    return workdir


def _remove_workdir(workdir: str) -> None:
    def make_writable_and_retry(func: Any, path: str, _exc: Any) -> None:
        # A program may chmod its own files read-only; we own the directory, so undo that.
        os.chmod(os.path.dirname(path), 0o700)
        if os.path.isdir(path) and not os.path.islink(path):
            os.chmod(path, 0o700)
        func(path)

    shutil.rmtree(workdir, onerror=make_writable_and_retry)


class _TailBuffer:
    """Keeps the last `limit` bytes written; everything before is counted and dropped."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.data = bytearray()
        self.dropped = 0

    def add(self, chunk: bytes) -> None:
        self.data += chunk
        excess = len(self.data) - self.limit
        if excess > 0:
            del self.data[:excess]
            self.dropped += excess

    def text(self) -> str:
        """The tail, note included, at most `limit` characters (the end is what matters)."""
        body = self.data.decode("utf-8", errors="replace")
        if not self.dropped:
            return body[-self.limit :]
        head = f"[{self.dropped} earlier bytes dropped]\n"
        return head + body[len(head) + len(body) - self.limit :]


class _Run:
    """One supervisor: pumps output and frames, notices its exit, enforces the deadlines."""

    def __init__(self, pid: int, output_fd: int, result_fd: int, limits: SandboxLimits) -> None:
        self.pid = pid
        self.limits = limits
        self.output = _TailBuffer(limits.max_output_bytes)
        self.frames_raw = bytearray()
        self.frames_overflow = False
        self.frames: list[Any] = []
        self.worker_pidfd: int | None = None
        self.started_at: float | None = None
        self.timed_out = False
        self.exited_at: float | None = None
        self.sel = selectors.DefaultSelector()
        self.sel.register(output_fd, selectors.EVENT_READ, "output")
        self.sel.register(result_fd, selectors.EVENT_READ, "result")
        self.pidfd: int | None = None
        with contextlib.suppress(OSError):  # already gone (and reaped): its pipes tell the rest
            self.pidfd = os.pidfd_open(pid)
            self.sel.register(self.pidfd, selectors.EVENT_READ, "exit")

    def pump(self) -> None:
        begun = time.monotonic()
        while any(key.data != "exit" for key in self.sel.get_map().values()):
            now = time.monotonic()
            deadline = (
                self.started_at + self.limits.timeout_s
                if self.started_at is not None
                else begun + STARTUP_TIMEOUT_S
            )
            if now >= deadline:
                self.timed_out = True
                break
            if self.exited_at is not None and now - self.exited_at > EXIT_GRACE_S:
                break
            for key, _ in self.sel.select(min(deadline - now, 0.25)):
                self._read(key.fd, key.data)

    def _read(self, fd: int, kind: str) -> None:
        if kind == "exit":  # the pidfd turned readable: the supervisor has exited
            self.exited_at = time.monotonic()
            self.sel.unregister(fd)
            return
        chunk = os.read(fd, 65536)
        if not chunk:
            self.sel.unregister(fd)
        elif kind == "output":
            self.output.add(chunk)
        elif len(self.frames_raw) + len(chunk) > MAX_RESULT_BYTES:
            self.frames_overflow = True
            self.sel.unregister(fd)
        else:
            self.frames_raw += chunk
            self._parse_frames()

    def _parse_frames(self) -> None:
        while b"\n" in self.frames_raw:
            line, _, rest = bytes(self.frames_raw).partition(b"\n")
            self.frames_raw = bytearray(rest)
            try:
                frame = json.loads(line)
            except ValueError:
                frame = None
            self.frames.append(frame)
            if len(self.frames) == 1 and _is_started_frame(frame):
                self.started_at = time.monotonic()
                with contextlib.suppress(OSError):  # already gone: nothing to kill
                    self.worker_pidfd = os.pidfd_open(frame["worker_pid"])

    def kill(self) -> None:
        """Kill the child's process group and the worker, even if it started its own session."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.pid, signal.SIGKILL)
        for pidfd in (self.pidfd, self.worker_pidfd):
            if pidfd is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    signal.pidfd_send_signal(pidfd, signal.SIGKILL)
                os.close(pidfd)
        self.sel.close()


def _is_started_frame(frame: Any) -> bool:
    return (
        isinstance(frame, dict)
        and set(frame) == {"kind", "worker_pid"}
        and frame["kind"] == "started"
        and type(frame["worker_pid"]) is int
        and frame["worker_pid"] > 1
    )


def _result_from_frames(frames: list[Any], overflow: bool) -> dict[str, Any]:
    """The validated result frame as {ok, result | error_class, message}; CRASHED otherwise."""
    if overflow:
        return _failure(ErrorClass.CRASHED, "oversized result from the sandbox")
    if frames and isinstance(frames[0], dict) and frames[0].get("kind") == "setup_error":
        raise SandboxError(f"sandbox setup failed: {truncate(str(frames[0].get('message')), 500)}")
    if len(frames) != 2 or not _is_started_frame(frames[0]):
        return _failure(ErrorClass.CRASHED, "the sandbox exited without a result")
    frame = frames[1]
    if not isinstance(frame, dict) or frame.get("kind") != "result":
        return _failure(ErrorClass.CRASHED, "malformed result from the sandbox")
    cpu_ok = isinstance(frame.get("cpu_s"), int | float)
    if (
        frame.get("status") == "ok"
        and set(frame) == {"kind", "status", "result", "cpu_s"}
        and cpu_ok
        and isinstance(frame["result"], dict)
    ):
        return {"ok": True, "result": frame["result"]}
    if (
        frame.get("status") == "error"
        and set(frame) == {"kind", "status", "error_class", "message", "cpu_s"}
        and cpu_ok
        and frame["error_class"] in RUNTIME_ERROR_CLASSES
        and isinstance(frame["message"], str)
    ):
        return _failure(RUNTIME_ERROR_CLASSES[frame["error_class"]], frame["message"])
    return _failure(ErrorClass.CRASHED, "malformed result from the sandbox")


def _failure(error_class: ErrorClass, message: str) -> dict[str, Any]:
    return {"ok": False, "error_class": error_class, "message": truncate(message)}


def _start(
    request: bytes,
    workdir: str,
    env: dict[str, str],
    pipes: tuple[int, int, int, int],
    limits: SandboxLimits,
    grant: GpuGrant | None,
) -> _Run:
    """Start the supervisor (forked by the zygote, or a fresh interpreter) for one run;
    `pipes` are (output_r, output_w, result_r, result_w)."""
    output_r, output_w, result_r, result_w = pipes
    try:
        pid = spawn_via_zygote(request, output_w, result_w, grant) if USE_ZYGOTE else None
        if pid is None:
            pid = _spawn_fresh(request, workdir, env, output_w, result_w)
    finally:
        os.close(output_w)
        os.close(result_w)
    return _Run(pid, output_r, result_r, limits)


def _spawn_fresh(
    request: bytes, workdir: str, env: dict[str, str], output_w: int, result_w: int
) -> int:
    proc = subprocess.Popen(
        child_command("--result-fd", str(result_w)),
        stdin=subprocess.PIPE,
        stdout=output_w,
        stderr=output_w,
        pass_fds=(result_w,),
        cwd=workdir,
        env=env,
        start_new_session=True,
    )
    # Reap it in the background; the pidfd and the pipes tell us when it is done.
    threading.Thread(target=_feed_and_reap, args=(proc, request), daemon=True).start()
    return proc.pid


def _feed_and_reap(proc: subprocess.Popen[bytes], request: bytes) -> None:
    try:
        cast(IO[bytes], proc.stdin).write(request)
        cast(IO[bytes], proc.stdin).close()
    except OSError:
        pass  # the child died before reading; its missing result tells the story
    proc.wait()


def run_in_sandbox(
    code: str,
    task: str,
    payload: dict[str, Any],
    limits: SandboxLimits,
    *,
    extra_read_paths: Sequence[str] = (),
    gpu_ids: Sequence[str] = (),
) -> dict[str, Any]:
    """Run task `task` on program `code` in a fresh confined child.

    Returns {ok, result} or {ok: False, error_class, message}, plus duration_s (wall time
    of the program's part) and stdout_tail (the last bytes of stdout+stderr, bounded).
    `extra_read_paths` lets a task read data outside the interpreter (a dataset root).
    `gpu_ids` (CUDA_VISIBLE_DEVICES entries of this node, e.g. Ray's GPU ids) makes it a GPU
    run: the child sees exactly those GPUs (as cuda:0, ...) and may open their device files;
    without them the run is confined exactly as a CPU run always was.
    Raises ValueError on bad arguments and SandboxError when the child cannot be set up.
    """
    if task not in TASKS:
        raise ValueError(f"unknown sandbox task {task!r}; known: {sorted(TASKS)}")
    if not isinstance(code, str):
        raise ValueError("code must be a str")
    ids = check_gpu_ids(gpu_ids)
    grant = gpu_grant(ids) if ids else None
    caps = sandbox_capabilities()
    if grant is not None and caps.namespaces != "none" and not caps.own_proc:
        _warn_gpu_without_own_proc()
    workdir = _make_workdir(caps)
    env = child_env(workdir, limits.threads, grant)
    read_paths, device_paths = confinement(extra_read_paths, grant)
    request = json.dumps(
        {
            "workdir": workdir,
            "env": env,
            "task": task,
            "code": code,
            "payload": payload,
            "limits": dataclasses.asdict(limits),
            "read_paths": read_paths,
            "device_paths": device_paths,
            "write_paths": list(grant.write_paths) if grant is not None else [],
            "gpu": grant is not None,
            "setup": dataclasses.asdict(caps),
        }
    ).encode()
    if len(request) > MAX_REQUEST_BYTES:
        raise ValueError(f"sandbox request of {len(request)} bytes is over {MAX_REQUEST_BYTES}")
    result_r, result_w = os.pipe()
    output_r, output_w = os.pipe()
    begun = time.monotonic()
    try:
        pipes = (output_r, output_w, result_r, result_w)
        run = _start(request, workdir, env, pipes, limits, grant)
        try:
            run.pump()
        finally:
            run.kill()
    finally:
        for fd in (output_r, result_r):
            os.close(fd)
        _remove_workdir(workdir)
    end = time.monotonic()
    duration = end - (run.started_at if run.started_at is not None else begun)
    if run.timed_out:
        limit = run.limits.timeout_s if run.started_at is not None else STARTUP_TIMEOUT_S
        outcome = _failure(ErrorClass.TIMEOUT, f"wall-clock limit of {limit:g} s exceeded")
    else:
        outcome = _result_from_frames(run.frames, run.frames_overflow)
        if not outcome["ok"] and run.started_at is None:
            raise SandboxError(f"sandbox child failed to start: {truncate(run.output.text(), 500)}")
    outcome["duration_s"] = round(duration, 4)
    outcome["stdout_tail"] = run.output.text()
    return outcome
