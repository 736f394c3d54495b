"""The parent's side of the zygote: the pre-warmed process that forks each run's supervisor.

Supervisors are forked from a zygote (`llmnas_dist.sandbox.child.zygote` is the other side):
a process started once per parent, with the same scrubbed environment and torch already
imported, that never runs a program. It cuts a build from about 2 s (interpreter + torch
import) to a few hundredths; if it dies it is restarted, and if it cannot be used
`spawn_via_zygote` says so and the runner starts a fresh interpreter instead. CPU runs share
one zygote; GPU runs get one per GPU environment (the loader reads LD_LIBRARY_PATH once).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import struct
import subprocess
import tempfile
import threading

from llmnas_dist.sandbox.gpus import GpuGrant
from llmnas_dist.sandbox.launch import STARTUP_TIMEOUT_S, child_command, child_env

log = logging.getLogger(__name__)


class _Zygote:
    """A pre-warmed process (scrubbed environment, torch imported, never runs a program)
    that forks a fresh supervisor per run: it saves the interpreter start and the torch
    import, about 2 s of a 2 s build. One per parent process, started on first use."""

    def __init__(self, grant: GpuGrant | None = None) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        neutral = tempfile.gettempdir()
        with theirs:
            self.proc = subprocess.Popen(
                child_command("--zygote", str(theirs.fileno())),
                pass_fds=(theirs.fileno(),),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                cwd=neutral,
                # a GPU run's variables from the start: the loader reads LD_LIBRARY_PATH once
                env=child_env(neutral, 1, grant),
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


def spawn_via_zygote(
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
