"""The seed population: trusted programs, so they are built in-process here."""

from __future__ import annotations

import itertools

import pytest
import torch

from llmnas_dist.admission.novelty import NoveltyIndex, minhash
from llmnas_dist.config import AdmissionConfig
from llmnas_dist.program.static import canonicalize
from llmnas_dist.seeds import load_seeds

SEEDS = load_seeds()
CFG = AdmissionConfig()


def build(code: str, shape: tuple[int, int, int], classes: int) -> torch.nn.Module:
    namespace: dict[str, object] = {}
    exec(compile(code, "<seed>", "exec"), namespace)  # trusted, shipped with the package
    net_cls = namespace["Net"]
    return net_cls((2, *shape), (classes,), {"lr": 0.01, "dropout": 0.1}, torch.device("cpu"))


def test_at_least_twelve_distinct_seeds():
    assert len(SEEDS) >= 12
    hashes = {canonicalize(code, CFG)[1] for code in SEEDS.values()}
    assert len(hashes) == len(SEEDS)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seed_builds_and_runs_from_tiny_to_large_inputs(name):
    torch.manual_seed(0)
    for shape, classes in (((1, 8, 8), 10), ((3, 32, 32), 100), ((3, 256, 256), 2)):
        net = build(SEEDS[name], shape, classes).eval()
        with torch.no_grad():
            out = net(torch.randn(2, *shape))
        assert out.shape == (2, classes), (shape, out.shape)
        assert torch.isfinite(out).all()
        params = sum(p.numel() for p in net.parameters())
        assert 0 < params <= CFG.max_params


def test_seed_trains_one_step():
    net = build(SEEDS["resnet_basic"], (1, 8, 8), 10)
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    x, y = torch.randn(4, 1, 8, 8), torch.tensor([0, 1, 2, 3])
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)


def test_seeds_pass_static_checks_and_are_pairwise_novel():
    index = NoveltyIndex(CFG.num_perm, CFG.tau)
    signatures = {}
    for name, code in SEEDS.items():
        canonical, digest = canonicalize(code, CFG)
        signatures[name] = minhash(canonical)
        index.add(digest, signatures[name])
    for a, b in itertools.combinations(SEEDS, 2):
        assert signatures[a].jaccard(signatures[b]) < CFG.tau, (a, b)
    assert len(index) == len(SEEDS)
