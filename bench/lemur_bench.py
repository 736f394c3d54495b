"""Admitted share of a folder of real programs (LEMUR's, say) against plain PyTorch.

For every `*.py` of the folder: (a) does plain PyTorch build `Net` at the dataset's shape
and run its forward pass? (an unsandboxed subprocess, as the program's author would run
it: point this only at programs you would run anyway); (b) does llmnas admit it (static
checks, sandboxed build, the parameter budget of --config)? Prints the admitted share of
the programs that plain PyTorch builds, the reasons of the rest, and one JSON line.

    python bench/lemur_bench.py DIR [--dataset imagenette] [--input-size PX]
                                [--config FILE] [--jobs N]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmnas_dist.cli.seeds import admit_all
from llmnas_dist.config import load_config
from llmnas_dist.evaluation.datasets import DatasetSpec, dataset_spec
from llmnas_dist.seeds import load_seeds

# Plain PyTorch, as LEMUR's trainer builds a program: declared keys (a value in LEMUR's
# [0, 1] range) plus batch, epoch and transform, and the three common keys (some programs
# read an undeclared 'dropout'); in_shape is (batch, C, H, W).
PLAIN_BUILD = """
import sys, torch
path, c, h, w, classes = sys.argv[1], *map(int, sys.argv[2:6])
ns = {"__name__": "program"}
exec(compile(open(path, encoding="utf-8").read(), path, "exec"), ns)
keys = ns["supported_hyperparameters"]() if "supported_hyperparameters" in ns else {"lr"}
prm = {k: 0.1 for k in keys}
prm.update(lr=0.01, momentum=0.9, dropout=0.2, batch=2, epoch=1, transform=f"norm_{h}")
net = ns["Net"]((2, c, h, w), (classes,), prm, torch.device("cpu"))
net.eval()
with torch.no_grad():
    out = net(torch.randn(2, c, h, w))
assert tuple(out.shape) == (2, classes), tuple(out.shape)
"""
PLAIN_TIMEOUT_S = 300


def plain_build(path: Path, spec: DatasetSpec) -> str | None:
    """None when plain PyTorch builds and runs the program, else the last error line."""
    args = [str(path), *map(str, spec.in_shape), str(spec.num_classes)]
    try:
        done = subprocess.run(
            [sys.executable, "-c", PLAIN_BUILD, *args],
            capture_output=True,
            text=True,
            timeout=PLAIN_TIMEOUT_S,
            cwd=path.parent,
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    if done.returncode == 0:
        return None
    lines = [ln for ln in done.stderr.strip().splitlines() if ln.strip()]
    return lines[-1][:160] if lines else f"exit {done.returncode}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--dataset", default="imagenette")
    parser.add_argument("--input-size", type=int)
    parser.add_argument("--config", help="config whose admission section is used")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()
    config = load_config(args.config)
    spec = dataset_spec(args.dataset).at_size(args.input_size)
    seeds = load_seeds(str(args.folder))
    paths = {name: args.folder / f"{name}.py" for name in seeds}
    with ThreadPoolExecutor(args.jobs) as pool:
        plain = dict(
            zip(seeds, pool.map(lambda n: plain_build(paths[n], spec), seeds), strict=True)
        )
    builds = {n: code for n, code in seeds.items() if plain[n] is None}
    results = admit_all(builds, config.admission, spec, args.jobs)
    rejected = [r for r in results if not r.verdict.admitted]
    admitted = len(results) - len(rejected)
    shape = "x".join(map(str, spec.in_shape))
    print(f"\n{len(seeds)} programs; plain PyTorch builds {len(builds)} at {spec.name} {shape}")
    for name, error in sorted(plain.items()):
        if error is not None:
            print(f"  plain build fails: {name}: {error}")
    share = admitted / len(builds) if builds else float("nan")
    print(f"llmnas admits {admitted} of those {len(builds)} ({share:.1%})")
    reasons = collections.Counter(r.row()["reason"] for r in rejected)
    for r in rejected:
        print(f"  {r.row()['reason']}: {r.name}: {r.verdict.message[:150]}")
    print(
        json.dumps(
            {
                "programs": len(seeds),
                "plain_builds": len(builds),
                "admitted": admitted,
                "share": round(share, 4),
                "reasons": dict(reasons),
            }
        )
    )


if __name__ == "__main__":
    main()
