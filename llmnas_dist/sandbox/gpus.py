"""GPU grants: what a sandboxed run on GPUs gets beyond a CPU run, computed by pure functions.

A GPU run (`gpu_ids`: the caller's assigned GPUs, e.g. Ray's) differs from a CPU run only by
its `GpuGrant`: CUDA_VISIBLE_DEVICES set to exactly those GPUs (the program uses cuda:0),
CUDA_DEVICE_ORDER and the driver's library path; read/write on /dev/nvidiactl,
/dev/nvidia-uvm(-tools), /dev/nvidia-caps and the assigned GPUs' own /dev/nvidia<minor>
(found in the driver's procfs listing; every GPU's file only when an id cannot be resolved,
with a warning); read on the driver's procfs/sysfs entries; writes beneath the worker's own
/proc/self/task; and, where namespaces are available, a /proc of its own PID namespace
(CUDA does not start without these two, measured on an H200). The child's worker creates the
CUDA context before the program runs and then caps the address space at CUDA's reservation
plus the memory limit (CUDA cannot start under a plain address-space limit).

Residual risk of a GPU run beyond a CPU run's: the program reaches the GPU driver's ioctl
interface (kernel attack surface) and can read hardware facts in /sys/devices, /sys/bus/pci
and /proc/modules, and write its own threads' /proc entries (see CUDA_WRITE_PATHS); it
cannot open another GPU's device file (where its id resolves).

Holds the driver's GPU listing (`NvidiaGpu`, `read_nvidia_gpus`), the device files
(`present_gpu_device_files`, `gpu_device_files`), the environment (`cuda_env`), the id check
(`check_gpu_ids`) and the grant itself (`GpuGrant`, `gpu_grant`). Standard library only.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

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
# Writable beneath (existing files only): the worker's own threads' /proc entries
# ("/proc/self" is resolved by the worker). Measured on an H200 (driver 580, Landlock ABI 7):
# CUDA did not start under Landlock (error 304) until writes beneath /proc/self/task were
# allowed; beneath /proc/self/comm, fd, mem, attr, oom_score_adj, /proc/thread-self, /sys,
# /dev, /usr, /var or /run it still failed (which file it writes was not traced: likely a
# thread's name, task/<tid>/comm, which a process sets for another of its threads).
# Threat argument: the entries are the worker's own, so what a program can change is itself: its
# threads' names, its own memory (task/<tid>/mem: it runs arbitrary code in that process already,
# and the kernel's confinement, uid nobody, Landlock, namespaces, rlimits and no_new_privs, is not
# in its memory), its OOM score (upwards only). As nobody and non-dumpable the worker finds those
# files owned by root, so its uid refuses most of them anyway. A magic link (fd/N, cwd, root) opens
# its target, which Landlock judges by the target's own path, so no file becomes writable through
# it; other processes' entries stay unwritable (and a GPU run's own /proc lists only the sandbox's
# processes). Hostile tests: tests/sandbox/test_sandbox_gpu.py.
CUDA_WRITE_PATHS = ("/proc/self/task",)
NVIDIA_GPUS_DIR = "/proc/driver/nvidia/gpus"  # one folder per GPU, named by its PCI bus id
CUDA_DEVICE_ORDERS = ("PCI_BUS_ID", "FASTEST_FIRST")
GPU_ID_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9:/._-]{0,99}")


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
    write_paths: tuple[str, ...] = CUDA_WRITE_PATHS  # files beneath may be written


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
