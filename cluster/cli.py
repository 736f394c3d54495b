"""The `llmnas` console script: every llmnas_dist command plus the driver's `run` and
`scale` (cluster/ sits above llmnas_dist, so it adds its commands rather than being
imported by them)."""

from __future__ import annotations

import sys
from collections.abc import Sequence

from cluster import run_cli
from llmnas_dist.cli.main import main as llmnas_main


def main(argv: Sequence[str] | None = None) -> int:
    return llmnas_main(argv, extra_modules=(run_cli,))


if __name__ == "__main__":
    sys.exit(main())
