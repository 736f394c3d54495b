"""Admission benchmark (issue 3, item 8). Prints markdown tables; every number is a ratio
against a baseline measured in the same run.

(a) Novelty lookup per candidate at archive sizes 1k/10k/100k: the LSH index
    (`NoveltyIndex.nearest`) against brute force over every archived signature, both the
    vectorised numpy scan and a pairwise `MinHash.jaccard` loop. The archive is built
    from real seed signatures plus mutated copies (a random share of the hash values
    replaced), so it has clusters of near programs as a NAS archive does; queries are
    real mutated seed programs.
(b) Admission throughput (candidates/s) of the seed programs through the whole pipeline
    with the sandboxed build, with 1 and 2 workers, and the sandbox's cost per candidate
    against an in-process build of the same (trusted) seeds.

    python bench/admission_bench.py [--sizes 1000 10000 100000] [--queries 100]
"""

from __future__ import annotations

import argparse
import os
import re
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch
from datasketch import LeanMinHash

from llmnas_dist.admission.novelty import MINHASH_SCHEME, MINHASH_SEED, NoveltyIndex, minhash
from llmnas_dist.admission.pipeline import Admission
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.evaluation.datasets import dataset_spec
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import load_seeds

CFG = AdmissionConfig(build_timeout_s=300)
FAMILY = 50


def synthetic_archive(
    base: np.ndarray, size: int, rng: np.random.Generator, model: str
) -> np.ndarray:
    """`size` signatures, each a variant of a family centre with a random share of its
    values replaced. 'dense': the seeds are the only centres (5%-95% replaced), so the
    number of near programs around a query grows with the archive. 'families': every
    FAMILY programs start a new family (random centre, 5%-60% replaced) and the seeds'
    families stay FAMILY strong, so near programs around a query are bounded."""
    if model == "dense":
        centres, share = base[rng.integers(0, len(base), size)], rng.uniform(0.05, 0.95, size)
    else:
        n_fam = max(len(base), size // FAMILY)
        pool = np.concatenate(
            [base, rng.integers(0, 2**32, (n_fam - len(base), base.shape[1]), dtype=np.uint32)]
        )
        centres, share = pool[np.arange(size) % n_fam], rng.uniform(0.05, 0.6, size)
    rows = centres.copy()
    mask = rng.random(rows.shape) < share[:, None]
    rows[mask] = rng.integers(0, 2**32, int(mask.sum()), dtype=np.uint32)
    return rows


def mutated_programs(seeds: dict[str, str], count: int, rng: np.random.Generator) -> list[str]:
    codes = list(seeds.values())
    out = []
    for i in range(count):
        code = codes[i % len(codes)]
        k = int(rng.integers(1, 6))
        code = re.sub(r"\b(16|24|32|48|64)\b", lambda m: str(int(m.group()) + 8), code, count=k)
        out.append(code + f"\n\ndef extra_{i}(x):\n    return x * {k}\n")
    return out


def time_per_call(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return (time.perf_counter() - start) / len(items)


def bench_lookup(sizes: list[int], n_queries: int, model: str) -> None:
    rng = np.random.default_rng(0)
    seeds = {n: canonicalize(c, CFG)[0] for n, c in load_seeds().items()}
    base = np.stack([minhash(c).hashvalues for c in seeds.values()]).astype(np.uint32)
    queries = [minhash(canonicalize(c, CFG)[0]) for c in mutated_programs(seeds, n_queries, rng)]
    print(f"\n(a) novelty lookup per candidate, archive model '{model}' (mean of queries)\n")
    print("| archive | build index s | LSH ms | numpy scan ms | pairwise loop ms |", end="")
    print(" scan/LSH | loop/LSH | same decision |")
    print("|---|---|---|---|---|---|---|---|")
    for size in sizes:
        rows = synthetic_archive(base, size, rng, model)
        index = NoveltyIndex(CFG.num_perm, CFG.tau)
        start = time.perf_counter()
        for i, row in enumerate(rows):
            index.add(f"h{i}", row)
        for i, q in enumerate(queries[: n_queries // 4]):  # some true near-duplicates
            index.add(f"q{i}", q)
        built = time.perf_counter() - start
        lsh = time_per_call(index.nearest, queries)
        scan = time_per_call(index.brute_force_nearest, queries)
        loop_sample = [
            LeanMinHash(seed=MINHASH_SEED, hashvalues=r, scheme=MINHASH_SCHEME)
            for r in rows[: min(size, 20_000)]
        ]
        per_pair = time_per_call(
            lambda q, sample=loop_sample: [q.jaccard(m) for m in sample], queries[:3]
        )
        loop = per_pair * size / len(loop_sample)  # the loop is linear: scale the sample
        same = sum(
            index.is_novel(index.nearest(q)[1]) == index.is_novel(index.brute_force_nearest(q)[1])
            for q in queries
        )
        print(
            f"| {size:,} | {built:.1f} | {lsh * 1e3:.3f} | {scan * 1e3:.3f} | {loop * 1e3:.1f} "
            f"| {scan / lsh:.1f}x | {loop / lsh:.0f}x | {same}/{len(queries)} |"
        )


def in_process_build(code: str, shape: tuple[int, int, int], classes: int) -> int:
    namespace: dict[str, object] = {}
    exec(compile(code, "<seed>", "exec"), namespace)  # trusted seeds only, benchmark only
    net = namespace["Net"]((2, *shape), (classes,), {"dropout": 0.2}, torch.device("cpu"))
    net.eval()
    with torch.no_grad():
        net(torch.randn(2, *shape))
    return sum(p.numel() for p in net.parameters())


def bench_throughput(dataset: str) -> None:
    spec = dataset_spec(dataset)
    seeds = list(load_seeds().values())
    torch.set_num_threads(1)
    start = time.perf_counter()
    for code in seeds:
        in_process_build(code, spec.in_shape, spec.num_classes)
    inproc = (time.perf_counter() - start) / len(seeds)

    def admit_all(workers: int) -> tuple[float, int]:
        admissions = [Admission(CFG, spec) for _ in range(workers)]  # one index per worker
        start = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            verdicts = list(
                pool.map(
                    lambda ic: admissions[ic[0] % workers].admit_program(ic[1]), enumerate(seeds)
                )
            )
        return time.perf_counter() - start, sum(v.admitted for v in verdicts)

    print(f"\n(b) admission of the {len(seeds)} seeds, dataset {dataset} {spec.in_shape}\n")
    print("| pipeline | s per candidate | candidates/s | admitted | vs in-process build |")
    print("|---|---|---|---|---|")
    print(f"| in-process build (trusted) | {inproc:.3f} | {1 / inproc:.1f} | - | 1.0x |")
    for workers in (1, 2):
        elapsed, admitted = admit_all(workers)
        per = elapsed / len(seeds)
        print(
            f"| sandboxed admission, {workers} worker(s) | {per:.3f} | {1 / per:.2f} "
            f"| {admitted}/{len(seeds)} | {per / inproc:.0f}x |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10_000, 100_000])
    parser.add_argument("--queries", type=int, default=100)
    parser.add_argument("--models", nargs="+", default=["families", "dense"])
    parser.add_argument("--dataset", default="digits")
    parser.add_argument("--skip-lookup", action="store_true")
    parser.add_argument("--skip-throughput", action="store_true")
    args = parser.parse_args()
    print(f"torch threads {torch.get_num_threads()}; cpus visible {len(os.sched_getaffinity(0))}")
    if not args.skip_lookup:
        for model in args.models:
            bench_lookup(args.sizes, args.queries, model)
    if not args.skip_throughput:
        bench_throughput(args.dataset)


if __name__ == "__main__":
    main()
