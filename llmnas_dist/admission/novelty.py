"""Novelty: MinHash signatures of programs and an LSH index over the whole archive.

A program's shingles are runs of `shingle_size` consecutive tokens of the regex
`[A-Za-z_]\\w*|[^\\s]`, taken after comments and blank lines are dropped (admission feeds the
canonical code, so docstrings and formatting are gone too). Signatures are datasketch
MinHashes with a fixed seed and the `affine32` scheme: `num_perm` uint32 values, stored in
the archive as `hashvalues.tobytes()` (4 * num_perm bytes). Signatures made with another
seed, scheme or num_perm are not comparable, so `rebuild` refuses them.

Two MinHashLSH indexes share one signature matrix:
- the decision index, banded so that a pair at Jaccard = tau becomes a candidate with
  probability >= `DECISION_RECALL` (datasketch's default banding for 0.9 catches only ~30%
  of pairs at exactly 0.9); its candidates are confirmed with the estimated Jaccard, so a
  candidate is rejected when some archived program has estimated Jaccard >= tau;
- the neighbour index (threshold `NEIGHBOUR_THRESHOLD`), queried only when the decision
  index has no candidate at all, so the nearest neighbour is recorded for every candidate
  that has one above about 0.5. Below that the nearest is recorded as None: finding it
  would cost a full scan, and "nothing within 0.5" is what the diagnostics need.
A lookup costs a few band-hash probes plus one vectorised estimate over the candidates
returned: independent of archive size as long as the number of near programs is bounded
(it grows only where the archive itself gets dense around the query).
"""

from __future__ import annotations

import io
import re
import tokenize
from collections.abc import Iterable

import numpy as np
from datasketch import LeanMinHash, MinHash, MinHashLSH

from llmnas_dist.config import AdmissionConfig

TOKEN_RE = re.compile(r"[A-Za-z_]\w*|[^\s]")
MINHASH_SEED = 1
MINHASH_SCHEME = "affine32"
SIGNATURE_DTYPE = np.uint32
DECISION_RECALL = 0.99
NEIGHBOUR_THRESHOLD = 0.5
_SKIP_TOKENS = {
    tokenize.COMMENT,
    tokenize.NL,
    tokenize.NEWLINE,
    tokenize.INDENT,
    tokenize.DEDENT,
    tokenize.ENDMARKER,
}


def code_tokens(code: str) -> list[str]:
    """Tokens of the regex over the code with comments removed."""
    try:
        pieces = [
            tok.string
            for tok in tokenize.generate_tokens(io.StringIO(code).readline)
            if tok.type not in _SKIP_TOKENS
        ]
    except (tokenize.TokenError, SyntaxError):  # not Python: drop `#...` naively
        pieces = [line.split("#", 1)[0] for line in code.splitlines()]
    return [t for piece in pieces for t in TOKEN_RE.findall(piece)]


def shingles(code: str, size: int = 7) -> set[bytes]:
    """The set of `size`-token shingles (one shingle of all tokens if fewer)."""
    toks = code_tokens(code)
    if len(toks) <= size:
        return {" ".join(toks).encode()}
    return {" ".join(toks[i : i + size]).encode() for i in range(len(toks) - size + 1)}


def exact_jaccard(a: set[bytes], b: set[bytes]) -> float:
    if not a and not b:
        return 1.0
    return len(a & b) / len(a | b)


def minhash(code: str, num_perm: int = 128, shingle_size: int = 7) -> MinHash:
    m = MinHash(num_perm=num_perm, seed=MINHASH_SEED, scheme=MINHASH_SCHEME)
    m.update_batch(sorted(shingles(code, shingle_size)))
    return m


def signature_bytes(m: MinHash) -> bytes:
    return np.asarray(m.hashvalues, dtype=SIGNATURE_DTYPE).tobytes()


def signature_from_bytes(raw: bytes, num_perm: int) -> np.ndarray:
    """Decode an archived signature; ValueError when it was made with other settings."""
    expected = num_perm * np.dtype(SIGNATURE_DTYPE).itemsize
    if len(raw) != expected:
        raise ValueError(
            f"signature has {len(raw)} bytes, expected {expected} "
            f"({num_perm} x {np.dtype(SIGNATURE_DTYPE).name}, scheme {MINHASH_SCHEME})"
        )
    return np.frombuffer(raw, dtype=SIGNATURE_DTYPE).copy()


def estimated_jaccard(rows: np.ndarray, values: np.ndarray) -> np.ndarray:
    """Each signature row's estimated Jaccard to the signature `values`: the share of their
    MinHash values that are equal."""
    return np.asarray((rows == values).mean(axis=1))


def decision_bands(tau: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows): the most rows per band whose candidate probability at tau is at
    least DECISION_RECALL; more rows means fewer false candidates below tau."""
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if 1.0 - (1.0 - tau**rows) ** bands >= DECISION_RECALL:
            return bands, rows
    return num_perm, 1


class NoveltyIndex:
    """Exact hashes and MinHash signatures of every archived program, with LSH lookup."""

    def __init__(self, num_perm: int = 128, tau: float = 0.90) -> None:
        if not 0.0 < tau <= 1.0:
            raise ValueError(f"tau must be in (0, 1], got {tau}")
        self.num_perm = num_perm
        self.tau = tau
        self._decision = MinHashLSH(num_perm=num_perm, params=decision_bands(tau, num_perm))
        self._neighbour = MinHashLSH(threshold=NEIGHBOUR_THRESHOLD, num_perm=num_perm)
        self._rows = np.empty((0, num_perm), dtype=SIGNATURE_DTYPE)
        self._keys: list[str] = []
        self._row_of: dict[str, int] = {}

    @classmethod
    def from_config(cls, cfg: AdmissionConfig) -> NoveltyIndex:
        return cls(num_perm=cfg.num_perm, tau=cfg.tau)

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, code_hash: object) -> bool:
        return code_hash in self._row_of

    def _as_array(self, signature: MinHash | np.ndarray | bytes) -> np.ndarray:
        if isinstance(signature, bytes):
            return signature_from_bytes(signature, self.num_perm)
        values = np.asarray(getattr(signature, "hashvalues", signature), dtype=SIGNATURE_DTYPE)
        if values.shape != (self.num_perm,):
            raise ValueError(f"signature shape {values.shape}, expected ({self.num_perm},)")
        return values

    def _lean(self, values: np.ndarray) -> LeanMinHash:
        return LeanMinHash(seed=MINHASH_SEED, hashvalues=values, scheme=MINHASH_SCHEME)

    def add(self, code_hash: str, signature: MinHash | np.ndarray | bytes) -> None:
        """Index one program; adding a hash twice is a no-op."""
        if code_hash in self._row_of:
            return
        values = self._as_array(signature)
        row = len(self._keys)
        if row == len(self._rows):  # grow by doubling: amortised O(1) appends
            grown = np.empty((max(64, 2 * row), self.num_perm), dtype=SIGNATURE_DTYPE)
            grown[:row] = self._rows[:row]
            self._rows = grown
        self._rows[row] = values
        self._keys.append(code_hash)
        self._row_of[code_hash] = row
        lean = self._lean(values)
        self._decision.insert(row, lean, check_duplication=False)
        self._neighbour.insert(row, lean, check_duplication=False)

    def rebuild(self, records: Iterable[tuple[str, int, bytes]]) -> int:
        """Add (hash, num_perm, signature bytes) records, e.g. `Archive.iter_signatures`;
        returns how many were added. Records with another num_perm are an error."""
        added = 0
        for code_hash, num_perm, raw in records:
            if num_perm != self.num_perm:
                raise ValueError(
                    f"archived signature of {code_hash[:12]} has num_perm={num_perm}, "
                    f"the index uses {self.num_perm}"
                )
            before = len(self)
            self.add(code_hash, raw)
            added += len(self) - before
        return added

    def _best(self, values: np.ndarray, rows: list[int]) -> tuple[str | None, float | None]:
        if not rows:
            return None, None
        idx = np.fromiter(rows, dtype=np.int64, count=len(rows))
        est = estimated_jaccard(self._rows[idx], values)
        best = int(np.argmax(est))
        return self._keys[int(idx[best])], float(est[best])

    def nearest(self, signature: MinHash | np.ndarray | bytes) -> tuple[str | None, float | None]:
        """The closest archived program found by LSH and its estimated Jaccard, or
        (None, None) when nothing is above about NEIGHBOUR_THRESHOLD."""
        values = self._as_array(signature)
        lean = self._lean(values)
        near = self._decision.query(lean)
        if near:  # the nearest is (with high probability) among these
            return self._best(values, near)
        return self._best(values, self._neighbour.query(lean))

    def _near_rows(self, code_hash: str | None, threshold: float) -> np.ndarray:
        row = self._row_of.get(code_hash or "")
        if row is None:
            return np.empty(0, dtype=np.int64)
        rows = self._rows[: len(self._keys)]
        return np.flatnonzero(estimated_jaccard(rows, rows[row]) >= threshold)

    def neighbourhood(self, code_hash: str | None, threshold: float) -> bytes:
        """The signatures (`signature_bytes` of each, one after another) of the archived
        programs whose estimated Jaccard to the archived program `code_hash` is at least
        `threshold`, itself included; b"" when it is not archived."""
        return self._rows[self._near_rows(code_hash, threshold)].tobytes()

    def near(self, code_hash: str | None, threshold: float) -> list[str]:
        """The hashes of the programs of `neighbourhood`, in the order they were added."""
        return [self._keys[int(i)] for i in self._near_rows(code_hash, threshold)]

    def is_novel(self, jaccard: float | None) -> bool:
        return jaccard is None or jaccard < self.tau

    def brute_force_nearest(
        self, signature: MinHash | np.ndarray | bytes
    ) -> tuple[str | None, float | None]:
        """Scan every archived signature (the benchmark's baseline; exact nearest by estimate)."""
        if not self._keys:
            return None, None
        est = estimated_jaccard(self._rows[: len(self._keys)], self._as_array(signature))
        best = int(np.argmax(est))
        return self._keys[best], float(est[best])
