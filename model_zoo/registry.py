"""The zoo's registry: what each architecture is, its input sizes and the pixel scaling it expects.

Importing this module does not import TensorFlow (so ``wbc-zoo`` can check its inputs in an instant);
:attr:`Architecture.build` imports :mod:`model_zoo.architectures` on first use.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass

Size = tuple[int, int]


@dataclass(frozen=True)
class Architecture:
    """One entry of the zoo."""

    name: str
    default_size: Size
    min_size: Size  # smallest (height, width) the builder accepts
    preprocess: str  # pixel scaling the model expects (sidecar values): unit | raw | symmetric | caffe
    default_classes: int
    source: str
    pretrained_base: str | None = None  # the keras.applications base nested in the model, if any

    def build(self, input_size=None, n_classes: int | None = None, weights=None, seed: int | None = None):
        """``model_zoo.architectures.<name>(input_size, n_classes, weights=, seed=)`` with this entry's defaults."""
        builder = getattr(importlib.import_module("model_zoo.architectures"), self.name)
        return builder(
            self.default_size if input_size is None else input_size,
            self.default_classes if n_classes is None else int(n_classes),
            weights=weights,
            seed=seed,
        )

    @property
    def builder_doc(self) -> str:
        builder = getattr(importlib.import_module("model_zoo.architectures"), self.name)
        return " ".join((builder.__doc__ or "").split())

    def fits(self, input_size) -> bool:
        h, w = (input_size, input_size) if isinstance(input_size, int) else input_size
        return int(h) >= self.min_size[0] and int(w) >= self.min_size[1]


ARCHITECTURES: dict[str, Architecture] = {
    a.name: a
    for a in (
        Architecture("wbc_cnn", (128, 128), (16, 16), "raw", 5, "the reference WBC trust study"),
        Architecture(
            "vgg16_head", (224, 224), (32, 32), "caffe", 5, "the reference WBC trust study", pretrained_base="VGG16"
        ),
        Architecture(
            "resnet50_head",
            (224, 224),
            (32, 32),
            "caffe",
            5,
            "the reference WBC trust study",
            pretrained_base="ResNet50",
        ),
        Architecture(
            "efficientnetb0_head", (224, 224), (32, 32), "raw", 5, "a BCCD study", pretrained_base="EfficientNetB0"
        ),
        Architecture("attention_cnn", (128, 128), (8, 8), "raw", 5, "a multi-head CNN study"),
        Architecture("bloodmnist_cnn", (28, 28), (10, 10), "raw", 8, "a BloodMNIST study"),
        Architecture("leaky_cnn", (128, 128), (16, 16), "raw", 5, "a 4-class WBC study"),
        Architecture("small_cnn", (96, 96), (16, 16), "raw", 5, "ours (the wbc-audit sample model)"),
    )
}


def get(name: str) -> Architecture:
    """The registry entry ``name``; KeyError naming the known ones otherwise."""
    try:
        return ARCHITECTURES[name]
    except KeyError:
        raise KeyError(f"unknown architecture {name!r}; known: {', '.join(ARCHITECTURES)}") from None
