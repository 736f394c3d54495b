"""Archive benchmark: the elite query, `top` and the signature load at archive scale.

    python bench/archive_bench.py [--rows 100000] [--backend sqlite|postgres|both]

Builds a run with N architectures (code, a 128-value MinHash signature, an admitted
candidate, one evaluation each), then times each operation (median of --repeat runs)
and prints per-operation time, rows/s, and the ratio of the SQL elite query to the
Python path (load every evaluation row, average and sort in Python, then fetch the
elites' code). PostgreSQL uses a throwaway database on the server named by
LLMNAS_TEST_PG_URL (an admin URL; default the local trust-auth server).
"""

from __future__ import annotations

import argparse
import math
import os
import random
import secrets
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import create_engine, insert, select
from sqlalchemy.engine import make_url

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db.archive import Archive, candidate_id
from db.models import Architecture, ArchScore, Candidate, Evaluation, utcnow
from llmnas_dist.vocab import budget_key, code_hash

PG_ADMIN_URL = os.environ.get(
    "LLMNAS_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
RUN = "bench"
DATASET = "digits"
BUDGET = budget_key(epochs=1.0)
NUM_PERM = 128
BATCH = 5_000


@contextmanager
def archive_on(backend: str) -> Iterator[Archive]:
    """A fresh archive on a throwaway SQLite file or PostgreSQL database."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as tmp:
            archive = Archive.from_url(f"sqlite:///{Path(tmp) / 'bench.db'}")
            try:
                yield archive
            finally:
                archive.close()
        return
    admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    name = f"llmnas_bench_{secrets.token_hex(4)}"
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    url = make_url(PG_ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    archive = Archive.from_url(url)
    try:
        yield archive
    finally:
        archive.close()
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


def populate(archive: Archive, n: int, seed: int = 0) -> None:
    """Bulk-load n evaluated architectures (Core executemany: 100k single-row API calls
    would measure transaction overhead, not the queries)."""
    archive.create_run(run_id=RUN, dataset=DATASET, budget=BUDGET)
    rng = random.Random(seed)
    np_rng = np.random.default_rng(seed)
    now = utcnow()
    with archive.engine.begin() as conn:
        for start in range(0, n, BATCH):
            idx = range(start, min(n, start + BATCH))
            codes = {i: f"class Net:\n    width = {i}\n    depth = {i % 17}\n" for i in idx}
            hashes = {i: code_hash(c) for i, c in codes.items()}
            sigs = np_rng.integers(0, 2**32, size=(len(idx), NUM_PERM), dtype=np.uint32)
            conn.execute(insert(Architecture), [
                {"hash": hashes[i], "code": codes[i], "signature": sigs[j].tobytes(),
                 "num_perm": NUM_PERM, "seed": 1, "scheme": "affine32", "shingle_size": 7,
                 "param_count": 1000 + i, "created_at": now, "first_run": RUN}
                for j, i in enumerate(idx)
            ])  # fmt: skip
            conn.execute(insert(Candidate), [
                {"id": candidate_id(RUN, i // 50, i % 50), "run_id": RUN, "cycle": i // 50,
                 "slot": i % 50, "attempt": 0, "arch_hash": hashes[i], "mode": "delta",
                 "prompt": "", "raw_output": "", "status": "evaluated",
                 "created_at": now, "updated_at": now}
                for i in idx
            ])  # fmt: skip
            # 3-decimal scores: realistic accuracy resolution, so ties occur
            scores = {i: round(rng.random(), 3) for i in idx}
            conn.execute(insert(Evaluation), [
                {"run_id": RUN, "arch_hash": hashes[i], "dataset": DATASET, "seed": 0,
                 "budget": BUDGET, "score": scores[i], "attempt": 1, "created_at": now}
                for i in idx
            ])  # fmt: skip
            # what Archive.record_evaluation maintains row by row
            conn.execute(insert(ArchScore), [
                {"run_id": RUN, "arch_hash": hashes[i], "dataset": DATASET, "budget": BUDGET,
                 "n_seeds": 1, "score_sum": scores[i], "mean_score": scores[i]}
                for i in idx
            ])  # fmt: skip
    if archive.dialect == "postgresql":  # what autovacuum does to a steady-state archive
        with archive.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")


def python_elites(archive: Archive, rho: float) -> list[tuple[str, float, str]]:
    """The baseline: every evaluation row into Python, averaged and sorted there."""
    e = Evaluation
    q = select(e.arch_hash, e.score).where(
        e.run_id == RUN, e.dataset == DATASET, e.budget == BUDGET, e.score.is_not(None)
    )
    sums: dict[str, list[float]] = {}
    with archive.engine.connect() as conn:
        for h, score in conn.execute(q):
            acc = sums.setdefault(h, [0.0, 0])
            acc[0] += score
            acc[1] += 1
        means = {h: s / c for h, (s, c) in sums.items()}
        order = sorted(means, key=lambda h: (-means[h], h))
        top = order[: max(1, math.ceil(rho * len(order)))]
        code: dict[str, str] = {}
        for i in range(0, len(top), 1000):
            chunk = top[i : i + 1000]
            q2 = select(Architecture.hash, Architecture.code).where(Architecture.hash.in_(chunk))
            code.update(conn.execute(q2).all())
    return [(h, means[h], code[h]) for h in top]


def timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    fn()  # warm caches: we measure queries, not the first page-in
    times, result = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), result


def bench_backend(backend: str, n: int, rho: float, repeat: int) -> list[dict[str, Any]]:
    with archive_on(backend) as archive:
        t0 = time.perf_counter()
        populate(archive, n)
        load_s = time.perf_counter() - t0
        t_sql, (gamma, elites) = timed(lambda: archive.elites(RUN, rho), repeat)
        t_py, reference = timed(lambda: python_elites(archive, rho), repeat)
        if [(e.hash, e.score) for e in elites] != [(h, s) for h, s, _ in reference]:
            raise SystemExit(f"{backend}: SQL and Python elite sets differ")
        t_top, _ = timed(lambda: archive.top(RUN, 10), repeat)
        t_sig, count = timed(lambda: sum(1 for _ in archive.iter_signatures()), max(1, repeat // 2))
        if count != n:
            raise SystemExit(f"{backend}: loaded {count} signatures, expected {n}")
    rows = [
        ("populate (bulk insert)", load_s, 4 * n, ""),
        (f"elites SQL (rho={rho}, {len(elites)} elites)", t_sql, n, ""),
        ("elites Python (load all, sort)", t_py, n, ""),
        ("top k=10", t_top, n, ""),
        ("load all signatures", t_sig, n, ""),
    ]
    table = [
        {"backend": backend, "op": op, "ms": s * 1000, "rows_per_s": r / s, "note": note}
        for op, s, r, note in rows
    ]
    table[1]["note"] = f"{t_py / t_sql:.1f}x faster than Python"
    return table


def print_table(rows: list[dict[str, Any]], n: int) -> None:
    print(f"archive benchmark, {n:,} architectures with evaluations (median times)")
    header = f"{'backend':<9}{'operation':<40}{'time ms':>11}{'rows/s':>14}  note"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['backend']:<9}{r['op']:<40}{r['ms']:>11.1f}{r['rows_per_s']:>14,.0f}  {r['note']}"
        )


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=100_000, help="architectures (default 100000)")
    p.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    p.add_argument("--rho", type=float, default=0.01, help="elite quantile (default 0.01)")
    p.add_argument("--repeat", type=int, default=5, help="timed runs per operation")
    args = p.parse_args()
    if args.rows < 1 or not 0 < args.rho <= 1 or args.repeat < 1:
        p.error("--rows and --repeat must be >= 1 and --rho in (0, 1]")
    backends = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    rows = [r for b in backends for r in bench_backend(b, args.rows, args.rho, args.repeat)]
    print_table(rows, args.rows)


if __name__ == "__main__":
    main()
