"""What a section may use, and nothing more.

:class:`SetupContext` is given to ``Section.setup`` after the model is loaded and before any forward pass;
:class:`SectionContext` to ``Section.run`` after the clean pass. The model is reached only through
:class:`ModelAccess`, a narrow view of the adapter (prepare, forward, features), so TensorFlow stays in
:mod:`auditor.model`.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ..progress import QUIET, Progress

if TYPE_CHECKING:  # pragma: no cover - types only
    from ..config import AuditConfig
    from ..data import DatasetIndex


def describe_exception(exc: BaseException) -> str:
    """One line: the exception's type and message, and where it was raised."""
    tb = traceback.extract_tb(exc.__traceback__)
    where = f" (at {Path(tb[-1].filename).name}:{tb[-1].lineno})" if tb else ""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}{where}"


@dataclass(frozen=True)
class CleanPass:
    """What one pass of a data set through the model produced (valid images only, in sample order)."""

    sample_idx: np.ndarray  # (n,) index into DatasetIndex.samples
    y_true: np.ndarray  # (n,) model class index
    probs: np.ndarray  # (n, k)
    features: np.ndarray  # (n, d), d may be 0
    failed: tuple[tuple[str, str], ...]  # (rel, reason) for files that did not decode
    all_hashes: Mapping[int, str]  # sample index -> sha256 for every file read
    seconds: float
    output_stats: Mapping[str, Any] = field(default_factory=dict)  # the adapter's raw-output statistics

    @property
    def hashes(self) -> list[str]:
        """Content sha256 of each valid image, in the order of ``sample_idx``."""
        return [self.all_hashes[i] for i in self.sample_idx]

    @property
    def features_or_none(self) -> np.ndarray | None:
        return self.features if self.features.shape[1] > 0 else None


class ModelAccess:
    """The model as a section sees it: prepare pixels, forward a batch, pass over another data set.

    Built by the pipeline around the prepared model; every method forwards to the adapter.
    """

    def __init__(
        self,
        prepared: Any,
        *,
        load_images: Callable[..., list[np.ndarray]],
        pass_over: Callable[..., CleanPass],
    ):
        self._pm = prepared
        self._load_images = load_images
        self._pass_over = pass_over

    @property
    def info(self) -> Any:
        """The model's :class:`auditor.model.ModelInfo`."""
        return self._pm.adapter.info

    @property
    def single_output(self) -> bool:
        """A binary model with one sigmoid/logit output unit, read as two classes [1 - s, s]."""
        return bool(getattr(self._pm.adapter, "binary", False))

    @property
    def n_outputs(self) -> int:
        return int(self._pm.adapter.n_outputs)

    @property
    def settings(self) -> dict[str, str]:
        """The audit's preprocessing settings (``resize``, ``scaling``, ``crop``, ``channels``)."""
        pm = self._pm
        return {"resize": pm.resize, "scaling": pm.scaling, "crop": pm.crop, "channels": pm.channels}

    def prepare(self, images: Sequence[np.ndarray], **overrides: str) -> np.ndarray:
        """Crop, resize, order channels and scale uint8 RGB images as the audit does; ``overrides`` change
        a setting (``resize=``, ``scaling=``, ``crop=``, ``channels=``)."""
        return self._pm.prepare(images, **overrides)

    def forward(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One batch of prepared inputs -> (probabilities (n, k), penultimate features (n, d))."""
        return self._pm.adapter.forward(x)

    def last_dense(self) -> tuple[np.ndarray | None, np.ndarray | None, str]:
        """The final Dense layer's kernel (d, k) and bias (k,), or ``(None, None, reason)`` when the output does
        not come from a Dense layer on a feature vector (the influence section)."""
        return self._pm.adapter.last_dense()

    def cam_target(self, layer: str | None = None) -> Any:
        """The Grad-CAM target layer (:class:`auditor.model.CamTarget`); raises
        :class:`auditor.analyses.gradcam.CamNotApplicable` for a model without a usable convolutional layer."""
        return self._pm.adapter.cam_target(layer)

    def gradcam(self, x: np.ndarray, classes: np.ndarray, *, layer: str | None = None, method: str = "gradcam"):
        """Grad-CAM maps (n, h, w) at the input size (each scaled to a maximum of 1) of ``classes`` for
        prepared inputs ``x``."""
        return self._pm.adapter.gradcam(x, classes, layer=layer, method=method)

    def cam_sanity(
        self, x: np.ndarray, classes: np.ndarray, *, layer: str | None = None, method: str = "gradcam", seed: int = 0
    ) -> list[tuple[str, np.ndarray]]:
        """Maps after cascading randomisation of a copy of the model, [(layer, maps)], top layer first."""
        return self._pm.adapter.cam_sanity(x, classes, layer=layer, method=method, seed=seed)

    def load_images(self, positions: Sequence[int], *, resize: str | None = None) -> list[np.ndarray]:
        """Decoded uint8 RGB images of the clean pass's rows ``positions``, decoded as the training loader of the
        resize method ``resize`` decodes (default: the audit's own)."""
        return self._load_images(positions, resize=resize)

    def pass_over(
        self, index: DatasetIndex, *, data_to_model: Mapping[str, int], stage: str, data_path: str
    ) -> CleanPass:
        """One clean pass over another data set (an external site), streamed in batches."""
        return self._pass_over(index, data_to_model=data_to_model, stage=stage, data_path=data_path)


@dataclass
class SetupContext:
    """What ``Section.setup`` sees: the configuration, the data index and the loaded model's classes."""

    config: AuditConfig
    index: DatasetIndex
    model_classes: tuple[str, ...]
    model_path: Path
    model: Any = None  # the loaded model's adapter (auditor.model.KerasClassifier): no forward pass here


@dataclass
class Table:
    """An extra CSV file a section writes into the report folder."""

    header: list[str]
    rows: list[list[str]]


@dataclass
class SectionContext:
    """What ``Section.run`` sees. Sections read it; they write only through ``add_columns``/``add_table``."""

    config: AuditConfig
    index: DatasetIndex
    class_names: tuple[str, ...]
    clean: CleanPass
    model: ModelAccess
    plan: Any = None  # what this section's ``setup`` returned
    results: Mapping[str, Any] = field(default_factory=dict)  # results of the sections run before
    progress: Progress = QUIET
    columns: dict[str, np.ndarray] = field(default_factory=dict)
    tables: dict[str, Table] = field(default_factory=dict)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (analysis, one-line error)

    @property
    def seed(self) -> int:
        return self.config.seed

    def options_of(self, name: str) -> Any:
        """The effective options of another section (e.g. the Fisher threshold for per-site Fisher)."""
        return self.config.options(name)

    def attempt(self, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run one sub-analysis; a crash is recorded as a failed analysis ``name`` and gives ``None``."""
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            self.failures.append((name, describe_exception(exc)))
            return None

    def add_columns(self, columns: Mapping[str, np.ndarray]) -> None:
        """Per-image columns for predictions.csv, one value per clean-pass row."""
        n = len(self.clean.sample_idx)
        for name, values in columns.items():
            if len(values) != n:
                raise ValueError(f"column {name!r} has {len(values)} values for {n} images")
            self.columns[name] = np.asarray(values)

    def add_table(self, relpath: str, table: Table) -> None:
        """An extra CSV in the report folder (``relpath`` such as ``sites/lab2.csv``)."""
        if relpath in self.tables or Path(relpath).is_absolute() or ".." in Path(relpath).parts:
            raise ValueError(f"table path {relpath!r} is taken or leaves the report folder")
        self.tables[relpath] = table
