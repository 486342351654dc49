"""The audit configuration: one frozen object, validated once at the boundary."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .errors import input_error
from .resize import DEFAULT_RESIZE, PLAIN_NAMES, check_channels, check_crop, check_resize

PREPROCESS_CHOICES = ("auto", "unit", "raw", "symmetric", "caffe")
RESIZE_CHOICES = PLAIN_NAMES  # the tf.image.resize names the preprocessing check tries; --resize takes every
# name of auditor.resize.METHODS. DEFAULT_RESIZE (bilinear) is keras.utils.image_dataset_from_directory's.
FORMAT_CHOICES = ("html", "pdf", "json")


@dataclass(frozen=True)
class AuditConfig:
    """Everything that decides what an audit computes and writes.

    ``preprocess="auto"`` and ``resize=None`` are resolved per model (sidecar first) by the pipeline;
    the effective values are recorded in the report.
    """

    model_paths: tuple[Path, ...]
    data_path: Path
    out_dir: Path = Path("audits")
    formats: tuple[str, ...] = FORMAT_CHOICES
    batch_size: int = 32
    seed: int = 0
    preprocess: str = "auto"
    resize: str | None = None
    crop: str | None = None  # none | center-square | center:F; None = sidecar, else none
    channels: str | None = None  # rgb | bgr; None = sidecar, else rgb
    class_names: tuple[str, ...] | None = None
    unsafe_deserialization: bool = False
    quiet: bool = False
    strict: bool = False
    n_bootstrap: int = 1000
    preprocess_check_samples: int = 250
    gallery_size: int = 12
    external: tuple[tuple[str, Path], ...] = ()
    sites_full: bool = False
    fisher_threshold: float = 0.5
    target_accuracies: tuple[float, ...] = (0.95, 0.99)
    workers: int = field(default_factory=lambda: max(1, min(4, os.cpu_count() or 1)))

    def __post_init__(self) -> None:
        if not self.model_paths:
            raise input_error("MODEL", "no model given", expected="at least one model file")
        if self.batch_size < 1:
            raise input_error("--batch-size", f"{self.batch_size} is not a positive integer")
        if self.preprocess not in PREPROCESS_CHOICES:
            raise input_error("--preprocess", f"unknown value {self.preprocess!r}",
                              expected="one of " + ", ".join(PREPROCESS_CHOICES))
        if self.resize is not None:
            check_resize(self.resize, "--resize")
        if self.crop is not None:
            check_crop(self.crop, "--crop")
        if self.channels is not None:
            check_channels(self.channels, "--channels")
        if not self.formats:
            raise input_error("--format", "no output format given",
                              expected="a comma-separated subset of " + ",".join(FORMAT_CHOICES))
        bad = [f for f in self.formats if f not in FORMAT_CHOICES]
        if bad:
            raise input_error("--format", f"unknown format {bad[0]!r}",
                              expected="a comma-separated subset of " + ",".join(FORMAT_CHOICES))
        if self.class_names is not None:
            if any(not n for n in self.class_names):
                raise input_error("--class-names", "an empty class name", expected="names separated by commas")
            if len(set(self.class_names)) != len(self.class_names):
                raise input_error("--class-names", "a class name is repeated")
        if self.n_bootstrap < 0:
            raise input_error("--bootstrap", f"{self.n_bootstrap} is negative")
        if self.preprocess_check_samples < 0:
            raise input_error("--preprocess-check-samples", f"{self.preprocess_check_samples} is negative")
        seen: set[str] = set()
        for name, path in self.external:
            if not name or not str(path):
                raise input_error("--external", f"{name}={path} lacks a name or a folder", expected="NAME=DIR")
            if name.casefold() in seen:
                raise input_error("--external", f"two sites are named {name!r}", expected="a distinct name per site")
            if name.casefold() == "internal":
                raise input_error("--external", "the name 'internal' is taken by the main data set")
            seen.add(name.casefold())
        if not 0 <= self.fisher_threshold <= 2:
            raise input_error("--fisher-threshold", f"{self.fisher_threshold} is outside [0, 2]",
                              expected="a Fisher score between 0 and 2")
        if not self.target_accuracies or any(not 0 < t <= 1 for t in self.target_accuracies):
            raise input_error("--target-accuracy", f"{list(self.target_accuracies)} is not a list of accuracies",
                              expected="values in (0, 1], e.g. 0.95,0.99")
        if self.workers < 1:
            raise input_error("--workers", f"{self.workers} is not a positive integer")

    def to_dict(self) -> dict:
        """JSON primitives only: the 'full effective configuration' shown in the report."""
        d = asdict(self)
        d["model_paths"] = [str(p) for p in self.model_paths]
        d["data_path"] = str(self.data_path)
        d["out_dir"] = str(self.out_dir)
        d["formats"] = list(self.formats)
        d["target_accuracies"] = list(self.target_accuracies)
        d["external"] = {name: str(path) for name, path in self.external}
        d["class_names"] = list(self.class_names) if self.class_names is not None else None
        return d


def parse_csv_option(value: str | None) -> tuple[str, ...] | None:
    """Split ``a,b , c`` into ``("a", "b", "c")``; ``None`` or blank gives ``None``."""
    if value is None or not value.strip():
        return None
    return tuple(part.strip() for part in value.split(","))
