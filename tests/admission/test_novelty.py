"""MinHash signatures, their accuracy against exact Jaccard, and the LSH index."""

from __future__ import annotations

import itertools
import re

import numpy as np
import pytest

from llmnas_dist.admission.novelty import (
    NoveltyIndex,
    code_tokens,
    decision_bands,
    exact_jaccard,
    minhash,
    shingles,
    signature_bytes,
)
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import load_seeds

CFG = AdmissionConfig()
SEEDS = {name: canonicalize(code, CFG)[0] for name, code in load_seeds().items()}


def mutate(code: str, k: int) -> str:
    """A realistic edit of strength k: new widths, an extra layer, renamed locals."""
    code = re.sub(r"\b(16|24|32|48|64)\b", lambda m: str(int(m.group()) * 2), code, count=k)
    if k > 1:
        code = code.replace(
            "def forward(self, x):", "def forward(self, x):\n        x = x * 1.0", 1
        )
    if k > 2:
        code = re.sub(r"\bc_in\b", "cin", code)
    return code


def test_tokens_ignore_comments_and_blank_lines():
    a = "x = f(a)  # call\n\n\n# note\ny = [1,2]\n"
    assert code_tokens(a) == ["x", "=", "f", "(", "a", ")", "y", "=", "[", "1", ",", "2", "]"]
    assert shingles(a, 7) == shingles("x=f( a )\ny=[1, 2]", 7)
    assert len(shingles(a, 7)) == len(code_tokens(a)) - 6
    assert shingles("x = 1", 7) == {b"x = 1"}


def test_minhash_estimate_tracks_exact_jaccard_on_real_programs():
    pairs = list(itertools.combinations(SEEDS.values(), 2))
    pairs += [(code, mutate(code, k)) for code in SEEDS.values() for k in (1, 2, 3)]
    errors, exact_values = [], []
    for a, b in pairs:
        exact = exact_jaccard(shingles(a), shingles(b))
        estimate = minhash(a).jaccard(minhash(b))
        exact_values.append(exact)
        errors.append(abs(exact - estimate))
    assert max(exact_values) > 0.8 and min(exact_values) < 0.3  # the pairs span the range
    assert max(errors) < 0.1
    assert float(np.mean(errors)) < 0.04


def test_index_finds_near_copies_and_dedups_exactly():
    index = NoveltyIndex(CFG.num_perm, CFG.tau)
    for name, code in SEEDS.items():
        index.add(name, minhash(code))
    index.add("resnet_basic", minhash("x = 1"))  # same key twice: ignored
    assert len(index) == len(SEEDS) and "resnet_basic" in index
    near = SEEDS["resnet_basic"].replace("bias=False", "bias=True", 1)
    key, jac = index.nearest(minhash(near))
    assert key == "resnet_basic" and jac >= CFG.tau and not index.is_novel(jac)
    edited = mutate(SEEDS["resnet_basic"], 3)
    key, jac = index.nearest(minhash(edited))
    exact = exact_jaccard(shingles(edited), shingles(SEEDS["resnet_basic"]))
    assert key == "resnet_basic" and abs(jac - exact) < 0.1
    key, jac = index.nearest(minhash("def f(a, b):\n    return a + b * 2 - len(str(a))\n"))
    assert (key, jac) == (None, None) and index.is_novel(jac)
    assert index.brute_force_nearest(minhash(near))[0] == "resnet_basic"


def test_decision_index_recall_at_threshold():
    bands, rows = decision_bands(0.9, 128)
    assert bands * rows <= 128 and 1 - (1 - 0.9**rows) ** bands >= 0.99
    rng = np.random.default_rng(7)
    index = NoveltyIndex(128, 0.9)
    base = rng.integers(0, 2**32, size=(200, 128), dtype=np.uint32)
    for i, row in enumerate(base):
        index.add(f"p{i}", row)
    found = 0
    for i, row in enumerate(base):  # a copy agreeing on 116/128 values: estimate 0.906
        probe = row.copy()
        changed = rng.choice(128, size=12, replace=False)
        probe[changed] = rng.integers(0, 2**32, size=12, dtype=np.uint32)
        key, jac = index.nearest(probe)
        found += key == f"p{i}" and jac == pytest.approx(116 / 128)
    assert found >= 196


def test_rebuild_from_archived_records():
    index = NoveltyIndex(CFG.num_perm, CFG.tau)
    records = [(name, 128, signature_bytes(minhash(code))) for name, code in SEEDS.items()]
    assert index.rebuild(iter(records)) == len(SEEDS)
    assert index.rebuild(iter(records[:2])) == 0
    key, jac = index.nearest(minhash(SEEDS["vit_tiny"]))
    assert (key, jac) == ("vit_tiny", 1.0)
    with pytest.raises(ValueError, match="num_perm=64"):
        index.rebuild([("x", 64, b"\0" * 256)])
    with pytest.raises(ValueError, match="bytes"):
        index.rebuild([("y", 128, b"\0" * 1024)])  # a uint64 (legacy scheme) signature


def test_a_neighbourhood_holds_the_program_and_what_is_near_it_only():
    cfg = AdmissionConfig()
    index = NoveltyIndex.from_config(cfg)
    base = "\n".join(f"x{i} = torch.relu(layer_{i}(x{i - 1}))" for i in range(40))
    near = base.replace("x39 = torch.relu", "x39 = torch.sigmoid")
    far = "\n".join(f"y{i} = nn.Conv2d({i}, {i + 1}, 3)" for i in range(40))
    for code in (base, near, far):
        index.add(code, minhash(code, cfg.num_perm, cfg.shingle_size))
    rows = np.frombuffer(index.neighbourhood(base, 0.6), dtype=np.uint32).reshape(-1, cfg.num_perm)
    own = np.asarray(minhash(base, cfg.num_perm, cfg.shingle_size).hashvalues, dtype=np.uint32)
    assert len(rows) == 2 and any((r == own).all() for r in rows)
    assert index.neighbourhood("not archived", 0.6) == b""
    assert len(index.neighbourhood(base, 1.0)) == cfg.num_perm * 4  # itself alone
    assert index.near(base, 0.6) == [base, near] and index.near(far, 0.6) == [far]
    assert index.near("not archived", 0.6) == []
