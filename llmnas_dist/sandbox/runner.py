"""Run generated programs in a confined child process; the build check.

The parent never imports or executes a program. Each run is a fresh
`python -I -m llmnas_dist.sandbox.child` in its own session and private temporary working
directory, with a scrubbed environment (PATH, HOME=workdir, LANG and thread caps only), so
no database URL, token or Ray address is inherited. The child (see its docstring) adds
rlimits, network/PID (and user) namespaces, a drop to `nobody` when root, and Landlock, as
far as the kernel allows: `sandbox_capabilities()` says what is active here.

A GPU run (`gpu_ids`: the caller's assigned GPUs, e.g. Ray's) differs from a CPU run only by
its `GpuGrant`, computed here by pure functions: CUDA_VISIBLE_DEVICES set to exactly those
GPUs (the program uses cuda:0), CUDA_DEVICE_ORDER and the driver's library path; read/write
on /dev/nvidiactl, /dev/nvidia-uvm(-tools), /dev/nvidia-caps and the assigned GPUs' own
/dev/nvidia<minor> (found in the driver's procfs listing; every GPU's file only when an id
cannot be resolved, with a warning); read on the driver's procfs/sysfs entries. Its worker
creates the CUDA context before the program runs and then caps the address space at CUDA's
reservation plus the memory limit (CUDA cannot start under a plain address-space limit).
Residual risk of a GPU run beyond a CPU run's: the program reaches the GPU driver's ioctl
interface (kernel attack surface) and can read hardware facts in /sys/devices, /sys/bus/pci
and /proc/modules; it cannot open another GPU's device file (where its id resolves).

Supervisors are forked from a zygote: a pre-warmed process started once per parent, with
the same scrubbed environment and torch already imported, that never runs a program. It
cuts a build from about 2 s (interpreter + torch import) to a few hundredths; if it dies
it is restarted, and if it cannot be used a fresh interpreter is started instead.

The parent reads stdout+stderr and the result pipe concurrently, keeps only a bounded tail
of the output, kills the whole process group and the worker (by pidfd, even if it left the
group) on timeout, and validates the result frames strictly: unknown keys, wrong types,
error classes outside the runtime set, or oversized data make the run CRASHED, never a
verdict the program chose. Residual risk: a program that gets past the static checks runs
arbitrary Python in the worker and can misreport its own measurements (parameter count,
output shape) to the supervisor; it cannot forge the supervisor's frames, reach the parent,
other runs, secrets, the network or files outside its directory (given the kernel features
that `sandbox_capabilities()` reports).
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import json
import logging
import math
import os
import re
import selectors
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from typing import IO, Any, cast

from llmnas_dist.config import AdmissionConfig, EvaluationConfig
from llmnas_dist.errors import CandidateRejected, ErrorClass, truncate
from llmnas_dist.program.lemur import program_prm
from llmnas_dist.program.source import parse_source
from llmnas_dist.sandbox import child as _sandbox_child

log = logging.getLogger(__name__)

CHILD_MODULE = "llmnas_dist.sandbox.child"
STARTUP_TIMEOUT_S = 120.0  # interpreter + torch import on a loaded machine, before the program runs
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
THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
)
USE_ZYGOTE = True  # fork supervisors from a pre-warmed process (False: a fresh interpreter each)
BUILD_BATCH = 2

# What a GPU run gets beyond a CPU run (a CPU run gets none of it). Device files (read, write,
# ioctl) shared by all GPUs; each GPU's own /dev/nvidia<minor> is added per assigned GPU.
CUDA_SHARED_DEVICES = ("nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-caps")
# Read-only paths the CUDA driver reads while it starts (seen in its traces): its procfs
# entries, the worker's own /proc/<pid> ("/proc/self" is resolved by the worker itself), the
# loaded-modules and device-major lists, NUMA and PCI attributes in sysfs.
CUDA_READ_PATHS = (
    "/proc/driver/nvidia",
    "/proc/self",
    "/proc/modules",
    "/proc/devices",
    "/sys/devices",
    "/sys/bus/pci",
    "/sys/module/nvidia",
    "/sys/module/nvidia_uvm",
)
NVIDIA_GPUS_DIR = "/proc/driver/nvidia/gpus"  # one folder per GPU, named by its PCI bus id
CUDA_DEVICE_ORDERS = ("PCI_BUS_ID", "FASTEST_FIRST")
GPU_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9:/._-]{0,99}")


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

    @property
    def network_isolated(self) -> bool:
        return self.namespaces != "none" or self.landlock_abi >= 4

    @property
    def filesystem_confined(self) -> bool:
        return self.landlock_abi > 0


@dataclasses.dataclass(frozen=True)
class BuildReport:
    param_count: int
    output_shape: tuple[int, ...]
    duration_s: float


@dataclasses.dataclass(frozen=True)
class NvidiaGpu:
    """One GPU as the driver lists it in procfs."""

    bus_id: str  # PCI bus id, e.g. 0000:18:00.0 (CUDA's PCI_BUS_ID order sorts by it)
    minor: int  # its device file is /dev/nvidia<minor>
    uuid: str  # GPU-..., "" when the driver does not say


@dataclasses.dataclass(frozen=True)
class GpuGrant:
    """What a sandboxed run on GPUs gets beyond a CPU run."""

    env: dict[str, str]  # CUDA_VISIBLE_DEVICES and the few other variables CUDA needs
    device_files: tuple[str, ...]  # read/write/ioctl: the shared nvidia files, the GPUs' own
    read_paths: tuple[str, ...]  # driver state in procfs/sysfs, driver library folders


def parse_nvidia_information(bus_id: str, text: str) -> NvidiaGpu | None:
    """A GPU from the text of /proc/driver/nvidia/gpus/<bus id>/information."""
    fields = dict(re.findall(r"^([^:\n]+):[ \t]*(.*?)[ \t]*$", text, flags=re.M))
    minor = fields.get("Device Minor", "")
    if not minor.isdigit():
        return None
    return NvidiaGpu(bus_id=bus_id.lower(), minor=int(minor), uuid=fields.get("GPU UUID", ""))


def read_nvidia_gpus(root: str = NVIDIA_GPUS_DIR) -> list[NvidiaGpu]:
    """The GPUs the driver lists here (none without a driver or when its files are hidden)."""
    try:
        names = sorted(os.listdir(root))
    except OSError:
        return []
    gpus = []
    for name in names:
        try:
            with open(os.path.join(root, name, "information"), encoding="utf-8") as fh:
                gpu = parse_nvidia_information(name, fh.read())
        except (OSError, UnicodeDecodeError):
            continue
        if gpu is not None:
            gpus.append(gpu)
    return gpus


def present_gpu_device_files(dev_dir: str = "/dev") -> list[str]:
    """The /dev/nvidia<N> files that exist here."""
    try:
        names = os.listdir(dev_dir)
    except OSError:
        return []
    return sorted(os.path.join(dev_dir, n) for n in names if re.fullmatch(r"nvidia\d+", n))


def _resolve_gpu(gpu_id: str, ordered: list[NvidiaGpu], order: str) -> NvidiaGpu | None:
    """The GPU a CUDA_VISIBLE_DEVICES entry names: an index (in PCI bus order only) or a
    (prefix of a) GPU UUID; None for anything else (MIG instances, FASTEST_FIRST order)."""
    if gpu_id.isdigit():
        index = int(gpu_id)
        return ordered[index] if order == "PCI_BUS_ID" and index < len(ordered) else None
    if gpu_id.startswith("GPU-"):
        matches = [g for g in ordered if g.uuid.lower().startswith(gpu_id.lower())]
        return matches[0] if len(matches) == 1 else None
    return None


def gpu_device_files(
    gpu_ids: Sequence[str],
    gpus: Sequence[NvidiaGpu],
    order: str,
    present: Sequence[str],
    dev_dir: str = "/dev",
) -> tuple[tuple[str, ...], list[str]]:
    """(device files of the assigned GPUs, ids that could not be resolved). Indices count,
    in PCI bus order, the GPUs whose device file is present (a container given some of a
    node's GPUs has only theirs; an assumption where procfs lists more GPUs than /dev has).
    When an id cannot be resolved, every present GPU file is granted (CUDA_VISIBLE_DEVICES
    still selects the GPU; only the device-file confinement is lost)."""
    ordered = sorted(
        (g for g in gpus if os.path.join(dev_dir, f"nvidia{g.minor}") in present),
        key=lambda g: g.bus_id,
    )
    resolved = {gid: _resolve_gpu(gid, ordered, order) for gid in gpu_ids}
    unresolved = [gid for gid, gpu in resolved.items() if gpu is None]
    if unresolved:
        return tuple(sorted(present)), unresolved
    minors = sorted({gpu.minor for gpu in resolved.values() if gpu is not None})
    return tuple(os.path.join(dev_dir, f"nvidia{m}") for m in minors), []


def library_dirs(parent_env: Mapping[str, str]) -> list[str]:
    """The absolute folders of the parent's LD_LIBRARY_PATH, where images put the driver's
    libcuda outside the loader cache (relative or empty entries would mean the workdir)."""
    entries = parent_env.get("LD_LIBRARY_PATH", "").split(":")
    return list(dict.fromkeys(e for e in entries if os.path.isabs(e)))


def cuda_env(gpu_ids: Sequence[str], parent_env: Mapping[str, str]) -> dict[str, str]:
    """The variables a GPU run adds to the scrubbed environment, nothing else of the parent's:
    the assigned GPUs, their numbering (PCI bus order unless the parent chose another: the
    order NVML, nvidia-smi, Ray's GPU detection and the driver's procfs listing share), and
    the library path the driver's libraries are found on."""
    order = parent_env.get("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    env = {
        "CUDA_VISIBLE_DEVICES": ",".join(gpu_ids),
        "CUDA_DEVICE_ORDER": order if order in CUDA_DEVICE_ORDERS else "PCI_BUS_ID",
    }
    dirs = library_dirs(parent_env)
    if dirs:
        env["LD_LIBRARY_PATH"] = ":".join(dirs)
    return env


def check_gpu_ids(gpu_ids: Sequence[Any]) -> list[str]:
    """GPU ids as CUDA_VISIBLE_DEVICES entries (Ray may give ints); ValueError otherwise."""
    if isinstance(gpu_ids, str | bytes) or not all(
        isinstance(g, str | int) and not isinstance(g, bool) for g in gpu_ids
    ):
        raise ValueError(f"gpu_ids must be a list of GPU indices or UUIDs, got {gpu_ids!r}")
    ids = [str(g) for g in gpu_ids]
    if len(set(ids)) != len(ids) or not all(GPU_ID_PATTERN.fullmatch(g) for g in ids):
        raise ValueError(f"gpu_ids must be distinct GPU indices or UUIDs, got {ids!r}")
    return ids


def gpu_grant(
    gpu_ids: Sequence[str],
    parent_env: Mapping[str, str] | None = None,
    *,
    gpus: Sequence[NvidiaGpu] | None = None,
    present: Sequence[str] | None = None,
    dev_dir: str = "/dev",
) -> GpuGrant:
    """Environment, device files and read paths of a run on `gpu_ids` (CUDA_VISIBLE_DEVICES
    entries of this node). Reads the driver's GPU list and /dev unless given them."""
    parent_env = os.environ if parent_env is None else parent_env
    env = cuda_env(gpu_ids, parent_env)
    own, unresolved = gpu_device_files(
        gpu_ids,
        read_nvidia_gpus() if gpus is None else gpus,
        env["CUDA_DEVICE_ORDER"],
        present_gpu_device_files(dev_dir) if present is None else present,
        dev_dir,
    )
    if not own:
        log.warning("sandbox: no /dev/nvidia<N> file for GPU %s here", ",".join(gpu_ids))
    elif unresolved:
        log.warning(
            "sandbox: cannot tell which /dev/nvidia* file GPU %s is; granting all GPUs' files",
            ",".join(unresolved),
        )
    shared = tuple(os.path.join(dev_dir, name) for name in CUDA_SHARED_DEVICES)
    return GpuGrant(
        env=env,
        device_files=shared + own,
        read_paths=CUDA_READ_PATHS + tuple(library_dirs(parent_env)),
    )


def confinement(
    extra_read_paths: Sequence[str], grant: GpuGrant | None
) -> tuple[list[str], list[str]]:
    """(read paths, device files) of a run: a CPU run's rules, plus the grant of a GPU run."""
    read_paths = _read_paths(extra_read_paths)
    device_paths = list(_sandbox_child.BASE_DEVICE_FILES)
    if grant is not None:
        read_paths = sorted(set(read_paths) | set(grant.read_paths))
        device_paths += grant.device_files
    return read_paths, device_paths


@functools.cache
def sandbox_capabilities() -> SandboxCapabilities:
    """Probe once (in a throwaway child) what the kernel allows; warn about what is missing."""
    proc = subprocess.run(
        [sys.executable, "-I", "-m", CHILD_MODULE, "--probe"],
        env=_child_env(tempfile.gettempdir(), 1),
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
    )
    if caps.namespaces == "none":
        log.warning(
            "sandbox: no network/PID namespaces on this machine; programs can reach the network"
        )
    if not caps.filesystem_confined:
        log.warning("sandbox: no Landlock; file access is limited only by the program's uid")
    return caps


def _child_env(workdir: str, threads: int, grant: GpuGrant | None = None) -> dict[str, str]:
    """A fresh environment: nothing inherited, so no secret can leak into the child; a GPU
    run adds only its grant's CUDA variables."""
    env = {"PATH": "/usr/bin:/bin", "HOME": workdir, "TMPDIR": workdir, "LANG": "C.UTF-8"}
    env.update({name: str(threads) for name in THREAD_ENV_VARS})
    if grant is not None:
        env.update(grant.env)
    return env


def _read_paths(extra: Sequence[str]) -> list[str]:
    """What the program may read: the interpreter, its packages, system libraries."""
    paths = {
        sys.prefix,
        sys.base_prefix,
        sys.exec_prefix,
        "/usr",
        "/lib",
        "/lib64",
        "/etc/ld.so.cache",
    }
    paths.update(p for p in sys.path if p and os.path.isabs(p))
    paths.update(os.path.abspath(p) for p in extra)
    return sorted(paths)


def _make_workdir(caps: SandboxCapabilities) -> str:
    workdir = tempfile.mkdtemp(prefix="llmnas-sandbox-")
    if caps.drop_uid:
        os.chown(workdir, _sandbox_child.NOBODY, _sandbox_child.NOBODY)
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


class _Zygote:
    """A pre-warmed process (scrubbed environment, torch imported, never runs a program)
    that forks a fresh supervisor per run: it saves the interpreter start and the torch
    import, about 2 s of a 2 s build. One per parent process, started on first use."""

    def __init__(self, grant: GpuGrant | None = None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        neutral = tempfile.gettempdir()
        with theirs:
            self.proc = subprocess.Popen(
                [sys.executable, "-I", "-m", CHILD_MODULE, "--zygote", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=neutral,
                # a GPU run's variables from the start: the loader reads LD_LIBRARY_PATH once
                env=_child_env(neutral, 1, grant),
                start_new_session=True,
            )
        self.sock = ours
        self.sock.settimeout(STARTUP_TIMEOUT_S)
        self.owner = os.getpid()

    def spawn(self, request: bytes, output_w: int, result_w: int) -> int:
        """Send a request with our pipe ends; returns the supervisor's pid."""
        socket.send_fds(self.sock, [struct.pack("!Q", len(request))], [output_w, result_w])
        self.sock.sendall(request)
        reply = bytearray()
        while len(reply) < 8:
            chunk = self.sock.recv(8 - len(reply))
            if not chunk:
                raise OSError("the sandbox zygote exited")
            reply += chunk
        return int(struct.unpack("!q", reply)[0])

    def close(self) -> None:
        self.sock.close()
        with contextlib.suppress(ProcessLookupError):
            self.proc.kill()
        self.proc.wait()


_zygote: _Zygote | None = None  # the CPU runs' zygote
_gpu_zygotes: dict[tuple[tuple[str, str], ...], _Zygote] = {}  # one per GPU environment
_zygote_lock = threading.Lock()


def _zygote_key(grant: GpuGrant | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(grant.env.items())) if grant is not None else ()


def _usable_zygote(grant: GpuGrant | None) -> _Zygote:
    """The zygote for this environment, started (or restarted) when needed."""
    global _zygote
    key = _zygote_key(grant)
    zygote = _gpu_zygotes.get(key) if key else _zygote
    if zygote is None or zygote.owner != os.getpid() or zygote.proc.poll() is not None:
        zygote = _Zygote(grant)
        if key:
            _gpu_zygotes[key] = zygote
        else:
            _zygote = zygote
    return zygote


def _drop_zygote(grant: GpuGrant | None) -> None:
    global _zygote
    key = _zygote_key(grant)
    zygote = _gpu_zygotes.pop(key, None) if key else _zygote
    if not key:
        _zygote = None
    if zygote is not None:
        zygote.close()


def _spawn_via_zygote(
    request: bytes, output_w: int, result_w: int, grant: GpuGrant | None
) -> int | None:
    """The supervisor's pid, or None when the zygote is unusable (then spawn afresh)."""
    with _zygote_lock:
        try:
            return _usable_zygote(grant).spawn(request, output_w, result_w)
        except OSError as exc:
            log.warning("sandbox zygote failed (%s); starting a fresh interpreter", exc)
            _drop_zygote(grant)
            return None


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
        pid = _spawn_via_zygote(request, output_w, result_w, grant) if USE_ZYGOTE else None
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
        [sys.executable, "-I", "-m", CHILD_MODULE, "--result-fd", str(result_w)],
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
    if task not in _sandbox_child.TASKS:
        raise ValueError(f"unknown sandbox task {task!r}; known: {sorted(_sandbox_child.TASKS)}")
    if not isinstance(code, str):
        raise ValueError("code must be a str")
    ids = check_gpu_ids(gpu_ids)
    grant = gpu_grant(ids) if ids else None
    caps = sandbox_capabilities()
    workdir = _make_workdir(caps)
    env = _child_env(workdir, limits.threads, grant)
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


def build_check(
    code: str, in_shape: Sequence[int], num_classes: int, cfg: AdmissionConfig
) -> BuildReport:
    """Build Net for a dataset of shape (C, H, W) and `num_classes` classes in the sandbox,
    forward a dummy batch of 2, and check the output; raises CandidateRejected. `prm` holds
    what the program's `supported_hyperparameters()` declares (llmnas_dist.program.lemur), and
    in_shape[0] is the batch the forward gets, as LEMUR gives it."""
    shape = tuple(in_shape)
    if len(shape) != 3 or not all(type(v) is int and v > 0 for v in shape):
        raise ValueError(f"in_shape must be (C, H, W) positive ints, got {in_shape!r}")
    if type(num_classes) is not int or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    try:
        tree = parse_source(code)
    except (SyntaxError, ValueError) as exc:
        raise CandidateRejected(ErrorClass.SYNTAX_ERROR, str(exc)) from None
    prm = program_prm(tree, batch=BUILD_BATCH, epochs=1, height=shape[1])
    payload = {"in_shape": [BUILD_BATCH, *shape], "num_classes": num_classes, "prm": prm}
    outcome = run_in_sandbox(code, "build", payload, SandboxLimits.from_admission(cfg))
    return build_verdict(outcome, num_classes, cfg.max_params)


def build_verdict(outcome: dict[str, Any], num_classes: int, max_params: int) -> BuildReport:
    """Judge a "build" run (the parent decides shape, NaN and size, not the program)."""
    if not outcome["ok"]:
        raise CandidateRejected(outcome["error_class"], outcome["message"])
    result = outcome["result"]
    param_count = result.get("param_count")
    output_shape = result.get("output_shape")
    if type(param_count) is not int or param_count < 0:
        raise CandidateRejected(ErrorClass.CRASHED, "malformed build result (param_count)")
    expected = [BUILD_BATCH, num_classes]
    if output_shape != expected:
        got = (
            output_shape
            if output_shape is not None
            else f"a {truncate(str(result.get('output_type')), 80)}"
        )
        raise CandidateRejected(
            ErrorClass.SHAPE_MISMATCH,
            f"forward returned {got}, expected a tensor of shape {expected}",
        )
    if result.get("finite") is not True:
        raise CandidateRejected(ErrorClass.NAN_OUTPUT, "forward returned NaN or inf values")
    if param_count > max_params:
        raise CandidateRejected(
            ErrorClass.TOO_LARGE, f"{param_count} parameters, over the budget of {max_params}"
        )
    return BuildReport(param_count, tuple(expected), outcome["duration_s"])
