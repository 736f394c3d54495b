"""The child's entry point, `python -I -m llmnas_dist.sandbox.child ARGS`.

ARGS is one of: `--probe` (print what isolation this kernel allows, as JSON), `--zygote FD`
(serve fork requests on the socket FD: llmnas_dist.sandbox.child.zygote), `--result-fd N`
(read one request from stdin and supervise that run, writing its frames on fd N).
"""

from __future__ import annotations

import json
import os
import sys

from llmnas_dist.sandbox.child.confine import probe
from llmnas_dist.sandbox.child.supervisor import run_supervisor
from llmnas_dist.sandbox.child.zygote import zygote_main


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
    run_supervisor(request, int(argv[1]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
