"""The sandbox child's two processes: the supervisor and the worker it forks.

Runs as two processes so the program never holds the pipe its verdict travels on:

- the supervisor (`supervise`) caps threads, imports torch and the allowlisted modules,
  makes itself non-dumpable, unshares the network and PID namespaces (plus a user
  namespace when not root, and for a GPU run a mount namespace), then forks the worker;
- the worker (`worker_main`; PID 1 of the new PID namespace, so every process it forks dies
  with it) closes the result pipe, confines itself (llmnas_dist.sandbox.child.confine),
  executes the program and runs the task (llmnas_dist.sandbox.child.tasks), and reports to
  the supervisor over a private pipe;
- the supervisor validates the worker's report and its exit status (signal, CPU time)
  (`verdict`) and writes newline-delimited JSON frames on the result fd: `started` (the
  worker's pid, so the parent can kill it even if it leaves the process group), then one
  `result` (or one `setup_error` when the sandbox itself could not be set up).

Residual risk: the worker runs the program, so a program that escapes the static checks
can misreport its own measurements (parameter count, output shape) through the private
pipe. It cannot reach the result fd, the parent, its environment, the network, or files
outside its working directory (where the kernel provides the namespaces and Landlock).
"""

from __future__ import annotations

import builtins
import json
import os
import select
import signal
import sys
from typing import Any

from llmnas_dist.sandbox.child.confine import (
    SetupError,
    apply_landlock,
    cap_address_space,
    die_with_parent,
    drop_to_nobody,
    make_undumpable,
    mount_own_proc,
    set_rlimits,
    unshare_namespaces,
    warm_cuda,
)
from llmnas_dist.sandbox.child.tasks import (
    TASK_MODULES,
    TASKS,
    import_keeping_environment,
    preload_modules,
)

MAX_REPORT_BYTES = 256 * 1024  # the worker's report and each frame, at most
MAX_MESSAGE_CHARS = 2000
PROGRAM_FILENAME = "<program>"

# Classes the worker may report; the parent decides shape, NaN and size verdicts itself.
WORKER_ERROR_CLASSES = frozenset({"build_failed", "out_of_memory"})


def _describe_exception(exc: BaseException) -> str:
    """One line: type, message, and the program line where it was raised (if any)."""
    line = None
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == PROGRAM_FILENAME:
            line = tb.tb_lineno
        tb = tb.tb_next
    where = f" (program line {line})" if line is not None else ""
    return f"{type(exc).__name__}: {exc}"[:MAX_MESSAGE_CHARS] + where


def _is_out_of_memory(exc: BaseException) -> bool:
    if isinstance(exc, MemoryError):
        return True
    text = str(exc)[:500].lower()
    return isinstance(exc, RuntimeError) and (
        "can't allocate memory" in text
        or "not enough memory" in text
        or "defaultcpuallocator" in text
    )


def run_program(request: dict[str, Any]) -> dict[str, Any]:
    """Run the task, which executes the program in a fresh module namespace."""

    def load_program() -> dict[str, Any]:
        # A private copy of builtins: the program rebinding a builtin cannot change ours.
        namespace: dict[str, Any] = {
            "__name__": "__program__",
            "__builtins__": dict(vars(builtins)),
        }
        exec(compile(request["code"], PROGRAM_FILENAME, "exec"), namespace)  # noqa: S102 - sandboxed
        return namespace

    try:
        result = TASKS[request["task"]](load_program, request["payload"])
    except BaseException as exc:  # noqa: BLE001 - SystemExit, KeyboardInterrupt: all the program's
        error_class = "out_of_memory" if _is_out_of_memory(exc) else "build_failed"
        return {"status": "error", "error_class": error_class, "message": _describe_exception(exc)}
    return {"status": "ok", "result": result}


def worker_main(request: dict[str, Any], report_fd: int, setup: dict[str, Any]) -> None:
    """Confine this process, run the program, write the report; never returns."""
    try:
        die_with_parent()
        gpu = request["gpu"] is True
        if gpu and setup["own_proc"]:
            mount_own_proc()  # while still privileged in our namespaces
        set_rlimits(request["limits"], address_space=not gpu)
        if setup["drop_uid"]:
            drop_to_nobody()
        if setup["landlock_abi"]:
            apply_landlock(
                setup["landlock_abi"],
                os.getcwd(),
                request["read_paths"],
                request["device_paths"],
                request["write_paths"],
            )
        if gpu:
            warm_cuda()  # confined already: it opens only what the GPU grant allows
            cap_address_space(request["limits"]["memory_mb"])
        report = run_program(request)
        data = json.dumps(report, allow_nan=False).encode()
    except BaseException as exc:  # noqa: BLE001 - a report must always be attempted
        data = json.dumps(
            {"status": "error", "error_class": "build_failed", "message": _describe_exception(exc)}
        ).encode()
    try:
        while data:
            data = data[os.write(report_fd, data[:65536]) :]
        for stream in (sys.__stdout__, sys.__stderr__):
            if stream is not None:
                stream.flush()
    finally:
        os._exit(0)  # threads the program started die here


def _write_frame(fd: int, frame: dict[str, Any]) -> None:
    data = json.dumps(frame).encode() + b"\n"
    while data:
        data = data[os.write(fd, data) :]


def _collect_report(fd: int, pid: int) -> tuple[bytes, bool, int, float]:
    """Read the worker's report (bounded) and wait for it; (report, overflow, status, cpu_s)."""
    buf = bytearray()
    overflow = False
    while True:
        ready, _, _ = select.select([fd], [], [], 0.2)
        if ready:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            keep = MAX_REPORT_BYTES - len(buf)
            overflow = overflow or len(chunk) > keep
            buf += chunk[: max(keep, 0)]
            continue
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return bytes(buf), overflow, status, usage.ru_utime + usage.ru_stime
    _, status, usage = os.wait4(pid, 0)
    return bytes(buf), overflow, status, usage.ru_utime + usage.ru_stime


def verdict(
    report: bytes, overflow: bool, status: int, cpu_s: float, cpu_limit: float
) -> dict[str, Any]:
    """The result frame from what the supervisor saw (exit status, CPU) and the report."""
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        if sig == signal.SIGXCPU or cpu_s >= cpu_limit:
            return _error("timeout", f"CPU time limit of {cpu_limit:g} s exceeded")
        if sig == signal.SIGKILL:
            return _error("out_of_memory", "killed by SIGKILL (out of memory)")
        return _error("crashed", f"killed by signal {signal.Signals(sig).name}")
    if overflow:
        return _error("crashed", "oversized report from the program's process")
    try:
        data = json.loads(report)
    except ValueError:
        code = os.waitstatus_to_exitcode(status)
        return _error("crashed", f"the program's process exited (status {code}) without a result")
    return _checked_report(data)


def _checked_report(data: Any) -> dict[str, Any]:
    if not isinstance(data, dict):
        return _error("crashed", "malformed report")
    if (
        data.get("status") == "ok"
        and set(data) == {"status", "result"}
        and isinstance(data["result"], dict)
    ):
        return {"kind": "result", "status": "ok", "result": data["result"]}
    if (
        data.get("status") == "error"
        and set(data) == {"status", "error_class", "message"}
        and data["error_class"] in WORKER_ERROR_CLASSES
        and isinstance(data["message"], str)
    ):
        return _error(data["error_class"], data["message"])
    return _error("crashed", "malformed report")


def _error(error_class: str, message: str) -> dict[str, Any]:
    return {
        "kind": "result",
        "status": "error",
        "error_class": error_class,
        "message": message[:MAX_MESSAGE_CHARS],
    }


def prepare(request: dict[str, Any]) -> None:
    """Thread caps and the imports every task needs, before the fork."""
    threads = int(request["limits"]["threads"])
    import_keeping_environment(preload_modules() + TASK_MODULES.get(request["task"], ()))
    import torch

    torch.set_num_threads(threads)
    torch.set_num_interop_threads(1)


def supervise(request: dict[str, Any], result_fd: int) -> None:
    setup = request["setup"]
    if request["task"] not in TASKS:
        raise SetupError(f"unknown task {request['task']!r}")
    prepare(request)
    make_undumpable()  # the worker cannot ptrace us or open our fds
    if setup["namespaces"] != "none":
        unshare_namespaces(
            user_namespace=setup["namespaces"] == "user",
            own_proc=request["gpu"] is True and setup["own_proc"],
        )
    report_r, report_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(result_fd)
        os.close(report_r)
        worker_main(request, report_w, setup)
    os.close(report_w)
    _write_frame(result_fd, {"kind": "started", "worker_pid": pid})
    report, overflow, status, cpu_s = _collect_report(report_r, pid)
    frame = verdict(report, overflow, status, cpu_s, float(request["limits"]["cpu_time_s"]))
    frame["cpu_s"] = round(cpu_s, 3)
    _write_frame(result_fd, frame)


def run_supervisor(request: dict[str, Any], result_fd: int) -> None:
    """Supervise one run and leave without interpreter teardown (a third of a second
    with torch loaded)."""
    code = 0
    try:
        supervise(request, result_fd)
    except SetupError as exc:
        _write_frame(result_fd, {"kind": "setup_error", "message": str(exc)[:MAX_MESSAGE_CHARS]})
        code = 3
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
