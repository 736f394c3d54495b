"""The sandbox child: `python -I -m llmnas_dist.sandbox.child --result-fd N` (or `--probe`).

Runs as two processes so the program never holds the pipe its verdict travels on:

- the supervisor (this process) reads the request from stdin, caps threads, imports torch
  and the allowlisted modules, makes itself non-dumpable, unshares the network and PID
  namespaces (plus a user namespace when not root), then forks the worker;
- the worker (PID 1 of the new PID namespace, so every process it forks dies with it)
  closes the result pipe, sets rlimits, drops to `nobody` when started as root, applies
  Landlock, executes the program and runs the task, and reports to the supervisor over a
  private pipe. A GPU run (the parent sets CUDA_VISIBLE_DEVICES to the assigned GPUs and
  grants their device files) creates the CUDA context after Landlock and before the
  program, then caps the address space at what CUDA reserved plus the memory limit;
- the supervisor validates the worker's report and its exit status (signal, CPU time)
  and writes newline-delimited JSON frames on the result fd: `started` (the worker's pid,
  so the parent can kill it even if it leaves the process group), then one `result`.

Residual risk: the worker runs the program, so a program that escapes the static checks
can misreport its own measurements (parameter count, output shape) through the private
pipe. It cannot reach the result fd, the parent, its environment, the network, or files
outside its working directory (where the kernel provides the namespaces and Landlock).

This module imports only the standard library at import time (torch and the static
allowlist of llmnas_dist.program.static inside functions) and never reads configuration or the
environment: the parent imports it to know `TASKS`, the child runs it with a scrubbed
environment.
"""

from __future__ import annotations

import builtins
import ctypes
import importlib
import json
import os
import resource
import select
import signal
import socket
import struct
import sys
from collections.abc import Callable, Sequence
from typing import Any

MAX_REPORT_BYTES = 256 * 1024  # the worker's report and each frame, at most
MAX_MESSAGE_CHARS = 2000
NOBODY = 65534
PROGRAM_FILENAME = "<program>"

# Modules the sandbox itself needs in the worker, beyond what a program may import.
SANDBOX_MODULES = ("traceback",)


def preload_modules() -> tuple[str, ...]:
    """What to import before the fork, so a worker that can no longer read the interpreter's
    files (uid nobody, Landlock) still has them: every module a program may import, taken
    from the static allowlist (llmnas_dist.program.static, the one source of truth), plus ours.
    Imported here, not at module level: the parent imports this module for TASKS."""
    from llmnas_dist.program.policy import ALLOWED_IMPORTS

    return (*sorted(ALLOWED_IMPORTS), *SANDBOX_MODULES)


# Device files every run may read and write (a GPU run adds its GPU's, see sandbox.py).
BASE_DEVICE_FILES = ("/dev/null", "/dev/zero", "/dev/urandom")

# Classes the worker may report; the parent decides shape, NaN and size verdicts itself.
WORKER_ERROR_CLASSES = frozenset({"build_failed", "out_of_memory"})

# Linux ABI constants (x86_64 and aarch64 share these syscall numbers).
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_NO_NEW_PRIVS = 38
SYS_LANDLOCK_CREATE_RULESET = 444
SYS_LANDLOCK_ADD_RULE = 445
SYS_LANDLOCK_RESTRICT_SELF = 446
LANDLOCK_CREATE_RULESET_VERSION = 1
LANDLOCK_RULE_PATH_BENEATH = 1
FS_EXECUTE = 1 << 0
FS_WRITE_FILE = 1 << 1
FS_READ_FILE = 1 << 2
FS_READ_DIR = 1 << 3
FS_ABI1_ALL = (1 << 13) - 1  # EXECUTE .. MAKE_SYM
FS_REFER = 1 << 13  # ABI 2
FS_TRUNCATE = 1 << 14  # ABI 3
FS_IOCTL_DEV = 1 << 15  # ABI 5
NET_BIND_TCP = 1 << 0  # ABI 4
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0  # ABI 6
SCOPE_SIGNAL = 1 << 1

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class SetupError(Exception):
    """The sandbox could not be set up (not the program's fault)."""


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


# ---------------------------------------------------------------- tasks (run in the worker)


def count_parameters(model: Any, numel: Callable[[Any], int]) -> int:
    """Distinct parameters reachable through the module tree, read from the instances'
    own dicts so that patched `parameters()`/`named_parameters()` methods cannot hide any."""
    seen_params: set[int] = set()
    seen_modules: set[int] = set()
    stack = [model]
    total = 0
    while stack:
        module = stack.pop()
        if id(module) in seen_modules:
            continue
        seen_modules.add(id(module))
        state = object.__getattribute__(module, "__dict__")
        for param in dict(state.get("_parameters", {})).values():
            if param is not None and id(param) not in seen_params:
                seen_params.add(id(param))
                total += int(numel(param))
        stack.extend(m for m in dict(state.get("_modules", {})).values() if m is not None)
    return total


def build_task(
    load_program: Callable[[], dict[str, Any]], payload: dict[str, Any]
) -> dict[str, Any]:
    """Instantiate Net for the payload's shape, forward a random batch, measure it."""
    import torch

    # Trusted references, taken before a line of the program runs (it may patch torch).
    module_type = torch.nn.Module
    tensor_type = torch.Tensor
    module_train = torch.nn.Module.train
    numel = torch._C.TensorBase.numel
    size = torch._C.TensorBase.size
    isfinite = torch.isfinite
    tensor_all = torch._C.TensorBase.all
    randn = torch.randn
    no_grad = torch.no_grad
    cpu = torch.device("cpu")

    namespace = load_program()
    net_class = namespace.get("Net")
    if not isinstance(net_class, type):
        raise LookupError("the program defines no class Net")
    in_shape = tuple(int(v) for v in payload["in_shape"])
    model = net_class(
        in_shape=in_shape,
        out_shape=(int(payload["num_classes"]),),
        prm=dict(payload["prm"]),
        device=cpu,
    )
    if not isinstance(model, module_type):
        raise TypeError(f"Net(...) returned {type(model).__name__}, not a torch.nn.Module")
    param_count = count_parameters(model, numel)
    module_train(model, False)
    with no_grad():
        out = model(randn(in_shape))
    if not isinstance(out, tensor_type):
        return {"param_count": param_count, "output_shape": None, "output_type": type(out).__name__}
    return {
        "param_count": param_count,
        "output_shape": [int(v) for v in size(out)],
        "output_type": "Tensor",
        "finite": bool(tensor_all(isfinite(out))),
    }


# The evaluation issue adds "train" here. A task gets `load_program` (executes the program
# and returns its namespace: call it after taking any references the program must not be
# able to patch) and the JSON payload, and returns a JSON-able dict.
def train_task(
    load_program: Callable[[], dict[str, Any]], payload: dict[str, Any]
) -> dict[str, Any]:
    """The proxy recipe (llmnas_dist.evaluation.recipe, imported by `prepare` before the fork)."""
    from llmnas_dist.evaluation.recipe import sandbox_train

    return sandbox_train(load_program, payload)


TASKS: dict[str, Callable[[Callable[[], dict[str, Any]], dict[str, Any]], dict[str, Any]]] = {
    "build": build_task,
    "train": train_task,
}
# Modules a task needs beyond preload_modules(), imported before the fork (by the zygote for
# all tasks, else by the supervisor): torch's optimizers import torch._dynamo on first use.
TASK_MODULES: dict[str, tuple[str, ...]] = {
    "train": ("torch._dynamo", "llmnas_dist.evaluation.recipe")
}


def import_keeping_environment(names: tuple[str, ...]) -> None:
    """Import modules, then undo any environment variable they set (torch._dynamo sets
    TORCHINDUCTOR_CACHE_DIR), so the program still sees only the scrubbed environment."""
    saved = dict(os.environ)
    for name in names:
        importlib.import_module(name)
    if dict(os.environ) != saved:
        os.environ.clear()
        os.environ.update(saved)


# ---------------------------------------------------------------- isolation primitives


def _check(ret: int, what: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what} failed: {os.strerror(err)}")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unsupported or disabled."""
    ret = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(ret), 0)


def unshare_namespaces(user_namespace: bool) -> None:
    """New network (loopback down, nothing reachable) and PID namespaces for our children."""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNET | CLONE_NEWPID | (CLONE_NEWUSER if user_namespace else 0)
    _check(_libc.unshare(ctypes.c_int(flags)), "unshare")
    if user_namespace:
        # Map only ourselves: inside, we keep our uid and hold no power over anyone else.
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)


def _landlock_fs_rights(abi: int) -> int:
    rights = FS_ABI1_ALL
    if abi >= 2:
        rights |= FS_REFER
    if abi >= 3:
        rights |= FS_TRUNCATE
    if abi >= 5:
        rights |= FS_IOCTL_DEV
    return rights


def landlock_rules(
    abi: int, workdir: str, read_paths: Sequence[str], device_paths: Sequence[str]
) -> list[tuple[str, int]]:
    """The (path, rights) rules: everything but execute beneath workdir, read beneath
    read_paths, read/write/ioctl on device_paths (the parent decides which: BASE_DEVICE_FILES
    for a CPU run, plus the assigned GPUs' files for a GPU run)."""
    handled_fs = _landlock_fs_rights(abi)
    device_rights = FS_READ_FILE | FS_WRITE_FILE | (handled_fs & (FS_TRUNCATE | FS_IOCTL_DEV))
    rules = [(workdir, handled_fs & ~FS_EXECUTE)]
    rules += [(path, FS_READ_FILE | FS_READ_DIR) for path in read_paths]
    rules += [(dev, device_rights) for dev in device_paths]
    return rules


def apply_landlock(
    abi: int,
    workdir: str,
    read_paths: Sequence[str],
    device_paths: Sequence[str] = BASE_DEVICE_FILES,
) -> None:
    """Writes only beneath workdir, reads only beneath read_paths, devices only device_paths,
    no execve, no TCP, no signals to or abstract sockets of processes outside the sandbox
    (as the ABI allows). A path is resolved here, by the confined process: "/proc/self" is
    its own /proc entry."""
    handled_fs = _landlock_fs_rights(abi)
    fields: list[tuple[str, Any]] = [("handled_access_fs", ctypes.c_uint64)]
    values = [handled_fs]
    if abi >= 4:
        fields.append(("handled_access_net", ctypes.c_uint64))
        values.append(NET_BIND_TCP | NET_CONNECT_TCP)
    if abi >= 6:
        fields.append(("scoped", ctypes.c_uint64))
        values.append(SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL)
    attr_type = type("RulesetAttr", (ctypes.Structure,), {"_fields_": fields})
    attr = attr_type(*values)
    ruleset = _libc.syscall(
        SYS_LANDLOCK_CREATE_RULESET,
        ctypes.byref(attr),
        ctypes.c_size_t(ctypes.sizeof(attr)),
        ctypes.c_uint32(0),
    )
    _check(ruleset, "landlock_create_ruleset")
    file_rights = (
        FS_EXECUTE | FS_WRITE_FILE | FS_READ_FILE | (handled_fs & (FS_TRUNCATE | FS_IOCTL_DEV))
    )
    try:
        for path, rights in landlock_rules(abi, workdir, read_paths, device_paths):
            try:
                fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
            except OSError:
                continue  # a read path that does not exist on this machine
            if not os.path.isdir(path):
                rights &= file_rights
            rule = _PathBeneath(rights, fd)
            ret = _libc.syscall(
                SYS_LANDLOCK_ADD_RULE,
                ctypes.c_int(ruleset),
                ctypes.c_int(LANDLOCK_RULE_PATH_BENEATH),
                ctypes.byref(rule),
                ctypes.c_uint32(0),
            )
            os.close(fd)
            _check(ret, f"landlock_add_rule({path})")
        _check(_libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "prctl(NO_NEW_PRIVS)")
        _check(
            _libc.syscall(SYS_LANDLOCK_RESTRICT_SELF, ctypes.c_int(ruleset), ctypes.c_uint32(0)),
            "landlock_restrict_self",
        )
    finally:
        os.close(ruleset)


def set_rlimits(limits: dict[str, Any], *, address_space: bool = True) -> None:
    """CPU time, processes, file size, no core dumps, and (unless `address_space` is False:
    a GPU run, capped later by `cap_address_space`) the address space."""
    cpu = int(limits["cpu_time_s"])
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    resource.setrlimit(resource.RLIMIT_CPU, (cpu, cpu + 1))  # SIGXCPU, then SIGKILL
    if address_space:
        memory = int(limits["memory_mb"]) * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
    resource.setrlimit(resource.RLIMIT_NPROC, (int(limits["max_processes"]),) * 2)
    resource.setrlimit(resource.RLIMIT_FSIZE, (int(limits["max_file_bytes"]),) * 2)


def warm_cuda() -> None:
    """Create the CUDA context (and a cuBLAS handle) before the program runs: the driver
    reserves address space of about twice the GPU's memory for it, which no fixed address-space
    limit would allow. When CUDA cannot start, the task falls back to the CPU (torch prints
    why to stderr, which reaches the parent's output tail)."""
    import torch

    if torch.cuda.is_available():
        x = torch.ones((1, 1, 8, 8), device="cuda")
        # a convolution and a matmul load cuDNN and cuBLAS (hundreds of MB of mappings)
        y = torch.nn.functional.conv2d(x, x[:, :, :3, :3]).flatten(1)
        float((y @ y.T).sum())


def cap_address_space(memory_mb: int) -> None:
    """Limit further growth of the address space to memory_mb beyond what it is now (CUDA's
    reservations included): the GPU run's equivalent of the CPU run's RLIMIT_AS."""
    with open("/proc/self/statm", "rb") as fh:
        current = int(fh.read().split()[0]) * resource.getpagesize()
    limit = current + int(memory_mb) * 1024 * 1024
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def drop_to_nobody() -> None:
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)


# ---------------------------------------------------------------- worker


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
        _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        gpu = request["gpu"] is True
        set_rlimits(request["limits"], address_space=not gpu)
        if setup["drop_uid"]:
            drop_to_nobody()
        if setup["landlock_abi"]:
            apply_landlock(
                setup["landlock_abi"], os.getcwd(), request["read_paths"], request["device_paths"]
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


# ---------------------------------------------------------------- supervisor


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
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)  # the worker cannot ptrace us or open our fds
    if setup["namespaces"] != "none":
        unshare_namespaces(user_namespace=setup["namespaces"] == "user")
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


# ---------------------------------------------------------------- capability probe


def _try_in_fork(action: Callable[[], None]) -> bool:
    pid = os.fork()
    if pid == 0:
        try:
            action()
        except BaseException:  # noqa: BLE001
            os._exit(1)
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


def probe() -> dict[str, Any]:
    """What this kernel lets us use, tried in throwaway forks."""
    is_root = os.geteuid() == 0
    namespaces = "none"
    if is_root and _try_in_fork(lambda: unshare_namespaces(user_namespace=False)):
        namespaces = "root"
    elif _try_in_fork(lambda: unshare_namespaces(user_namespace=True)):
        namespaces = "user"
    abi = landlock_abi()
    if abi and not _try_in_fork(lambda: apply_landlock(abi, os.getcwd(), [sys.prefix])):
        abi = 0
    return {"namespaces": namespaces, "landlock_abi": abi, "drop_uid": is_root}


def _run_supervisor(request: dict[str, Any], result_fd: int) -> None:
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


def _recv_exact(sock: socket.socket, size: int) -> bytes:
    buf = bytearray()
    while len(buf) < size:
        chunk = sock.recv(min(size - len(buf), 1 << 20))
        if not chunk:
            raise EOFError("zygote socket closed")
        buf += chunk
    return bytes(buf)


def zygote_main(sock_fd: int) -> None:
    """Import once, then fork a fresh supervisor per request; never runs a program itself.

    A request is an 8-byte length with two fds attached (output, result), then the JSON
    body; the reply is the supervisor's pid. Exits when the parent closes the socket."""
    import_keeping_environment(preload_modules() + sum(TASK_MODULES.values(), ()))
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps our supervisors
    sock = socket.socket(fileno=sock_fd)
    while True:
        try:
            header, fds, _, _ = socket.recv_fds(sock, 8, 2)
            if len(header) != 8 or len(fds) != 2:
                return
            body = _recv_exact(sock, struct.unpack("!Q", header)[0])
        except (OSError, EOFError):
            return
        pid = os.fork()
        if pid == 0:
            sock.close()
            _zygote_child(body, fds[0], fds[1])
        for fd in fds:
            os.close(fd)
        sock.sendall(struct.pack("!q", pid))


def _zygote_child(body: bytes, output_fd: int, result_fd: int) -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # we wait for our worker
    os.setsid()
    os.dup2(output_fd, 1)
    os.dup2(output_fd, 2)
    os.close(output_fd)
    request = json.loads(body)
    os.chdir(request["workdir"])
    os.environ.update(request["env"])
    _run_supervisor(request, result_fd)


def main(argv: list[str]) -> int:
    if argv == ["--probe"]:
        print(json.dumps(probe()))
        return 0
    if len(argv) == 2 and argv[0] == "--zygote":
        zygote_main(int(argv[1]))
        return 0
    if len(argv) != 2 or argv[0] != "--result-fd":
        print(
            "usage: python -I -m llmnas_dist.sandbox.child (--probe | --zygote FD | --result-fd N)",
            file=sys.stderr,
        )
        return 2
    request = json.loads(sys.stdin.buffer.read())
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)  # the worker inherits no stdin
    os.close(devnull)
    _run_supervisor(request, int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
