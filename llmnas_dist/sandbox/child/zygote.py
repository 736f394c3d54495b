"""The zygote: `python -I -m llmnas_dist.sandbox.child --zygote FD`, the child's side.

A pre-warmed process (the scrubbed environment, torch, the allowlisted modules and every
task's modules imported once) that forks a fresh supervisor per request and never runs a
program itself; the parent's side is llmnas_dist.sandbox.zygote.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import struct

from llmnas_dist.sandbox.child.confine import die_with_parent
from llmnas_dist.sandbox.child.supervisor import run_supervisor
from llmnas_dist.sandbox.child.tasks import (
    TASK_MODULES,
    import_keeping_environment,
    preload_modules,
)


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
    die_with_parent()
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
    run_supervisor(request, result_fd)
