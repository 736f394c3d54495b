"""Confinement primitives of the sandbox child: namespaces, Landlock, rlimits, uid drop.

The supervisor unshares the network and PID namespaces (plus a user namespace when not
root, and for a GPU run a private mount namespace where the worker mounts its own /proc)
before it forks the worker; the worker sets rlimits, drops to `nobody` when started as
root, applies Landlock (writes only beneath its working directory, reads only beneath the
paths the parent grants, devices only the granted device files, no execve, no TCP, no
signals or abstract sockets outside the sandbox, as the kernel's ABI allows) and, for a GPU
run, creates the CUDA context and then caps the address space. `probe` tries each feature in
a throwaway fork and says what this kernel allows.

Standard library only, never reads configuration or the environment: the parent imports it
for `NOBODY` and `BASE_DEVICE_FILES`.
"""

from __future__ import annotations

import ctypes
import os
import resource
import signal
import sys
from collections.abc import Callable, Sequence
from typing import Any

NOBODY = 65534

# Device files every run may read and write (a GPU run adds its GPU's, see sandbox/gpus.py).
BASE_DEVICE_FILES = ("/dev/null", "/dev/zero", "/dev/urandom")

# Linux ABI constants (x86_64 and aarch64 share these syscall numbers).
CLONE_NEWNS = 0x00020000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
MS_NOSUID = 1 << 1
MS_NODEV = 1 << 2
MS_NOEXEC = 1 << 3
MS_REC = 1 << 14
MS_PRIVATE = 1 << 18
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


def die_with_parent() -> None:
    """This process gets SIGKILL when its parent exits."""
    _libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)


def make_undumpable() -> None:
    """No core dumps, and processes of our uid (the worker) cannot ptrace us or open our fds."""
    _libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)


def _check(ret: int, what: str) -> None:
    if ret < 0:
        err = ctypes.get_errno()
        raise SetupError(f"{what} failed: {os.strerror(err)}")


def landlock_abi() -> int:
    """The kernel's Landlock ABI version, 0 when unsupported or disabled."""
    ret = _libc.syscall(SYS_LANDLOCK_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(ret), 0)


def unshare_namespaces(user_namespace: bool, own_proc: bool = False) -> None:
    """New network (loopback down, nothing reachable) and PID namespaces for our children;
    with `own_proc` also a private mount namespace, where our first child mounts its PID
    namespace's /proc (`mount_own_proc`)."""
    uid, gid = os.geteuid(), os.getegid()
    flags = CLONE_NEWNET | CLONE_NEWPID | (CLONE_NEWUSER if user_namespace else 0)
    _check(_libc.unshare(ctypes.c_int(flags | (CLONE_NEWNS if own_proc else 0))), "unshare")
    if user_namespace:
        # Map only ourselves: inside, we keep our uid and hold no power over anyone else.
        for name, text in (
            ("setgroups", "deny"),
            ("uid_map", f"{uid} {uid} 1"),
            ("gid_map", f"{gid} {gid} 1"),
        ):
            with open(f"/proc/self/{name}", "w") as fh:
                fh.write(text)
    if own_proc:
        # Mounts made from here on stay in this namespace: under a shared / (systemd's
        # default) the child's /proc would otherwise propagate onto the host's.
        _mount(None, "/", None, MS_REC | MS_PRIVATE)


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    def raw(text: str | None) -> bytes | None:
        return None if text is None else text.encode()

    ret = _libc.mount(raw(source), raw(target), raw(fstype), ctypes.c_ulong(flags), None)
    _check(ret, f"mount({target})")


def mount_own_proc() -> None:
    """Mount this PID namespace's procfs over /proc: run by the namespace's first process
    (it is PID 1 there) inside the private mount namespace `unshare_namespaces(own_proc=True)`
    made. Afterwards /proc lists only the sandbox's processes and /proc/self agrees with
    getpid(). A GPU run needs it: CUDA (driver 580, H200) did not start in a new PID
    namespace under the inherited /proc, and did with its own."""
    _mount("proc", "/proc", "proc", MS_NOSUID | MS_NODEV | MS_NOEXEC)


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
    abi: int,
    workdir: str,
    read_paths: Sequence[str],
    device_paths: Sequence[str],
    write_paths: Sequence[str] = (),
) -> list[tuple[str, int]]:
    """The (path, rights) rules: everything but execute beneath workdir, read beneath
    read_paths, read/write/ioctl on device_paths (the parent decides which: BASE_DEVICE_FILES
    for a CPU run, plus the assigned GPUs' files for a GPU run), writes to existing files
    beneath write_paths (none for a CPU run; see GpuGrant.write_paths)."""
    handled_fs = _landlock_fs_rights(abi)
    device_rights = FS_READ_FILE | FS_WRITE_FILE | (handled_fs & (FS_TRUNCATE | FS_IOCTL_DEV))
    rules = [(workdir, handled_fs & ~FS_EXECUTE)]
    rules += [(path, FS_READ_FILE | FS_READ_DIR) for path in read_paths]
    rules += [(dev, device_rights) for dev in device_paths]
    # truncation too: fopen(path, "w") opens with O_TRUNC (a procfs file has no size to cut)
    rules += [(path, FS_WRITE_FILE | (handled_fs & FS_TRUNCATE)) for path in write_paths]
    return rules


def apply_landlock(
    abi: int,
    workdir: str,
    read_paths: Sequence[str],
    device_paths: Sequence[str] = BASE_DEVICE_FILES,
    write_paths: Sequence[str] = (),
) -> None:
    """Writes only beneath workdir (and to files beneath write_paths), reads only beneath
    read_paths, devices only device_paths, no execve, no TCP, no signals to or abstract
    sockets of processes outside the sandbox (as the ABI allows). A path is resolved here,
    by the confined process: "/proc/self" is its own /proc entry."""
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
        for path, rights in landlock_rules(abi, workdir, read_paths, device_paths, write_paths):
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
    own_proc = namespaces != "none" and _try_in_fork(
        lambda: _own_proc_in_child(user_namespace=namespaces == "user")
    )
    abi = landlock_abi()
    if abi and not _try_in_fork(lambda: apply_landlock(abi, os.getcwd(), [sys.prefix])):
        abi = 0
    return {
        "namespaces": namespaces,
        "landlock_abi": abi,
        "drop_uid": is_root,
        "own_proc": own_proc,
    }


def _own_proc_in_child(user_namespace: bool) -> None:
    """Raises unless a child in new namespaces can mount its own /proc (a container without
    the mount capability, or whose /proc is partly covered, cannot)."""
    unshare_namespaces(user_namespace, own_proc=True)

    def mount_and_check() -> None:
        mount_own_proc()
        if os.readlink("/proc/self") != "1":
            raise SetupError("/proc/self is not this PID namespace's first process")

    if not _try_in_fork(mount_and_check):
        raise SetupError("cannot mount a /proc of our own")
