"""Pieces several sections share: gallery items and the predictions table."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from ..analyses._common import jsonable
from .base import ImageRef
from .context import CleanPass, SectionContext, Table


@dataclass(frozen=True)
class GalleryItem:
    """One image of a gallery: ``index`` into predictions.csv rows, and what the model said."""

    index: int
    path: str
    true_label: str
    predicted_label: str
    confidence: float
    true_probability: float

    def to_dict(self) -> dict:
        return jsonable(self)

    @property
    def thumb_key(self) -> str:
        return f"data:{self.index}"


def gallery(ctx: SectionContext, positions: Sequence[int]) -> tuple[GalleryItem, ...]:
    """Gallery items for clean-pass rows ``positions`` (in that order)."""
    cp, names, samples = ctx.clean, ctx.class_names, ctx.index.samples
    pred = cp.probs.argmax(axis=1)
    return tuple(
        GalleryItem(
            index=int(j),
            path=samples[cp.sample_idx[j]].rel,
            true_label=names[cp.y_true[j]],
            predicted_label=names[pred[j]],
            confidence=float(cp.probs[j, pred[j]]),
            true_probability=float(cp.probs[j, cp.y_true[j]]),
        )
        for j in positions
    )


def gallery_images(items: Sequence[GalleryItem]) -> dict[str, ImageRef]:
    return {g.thumb_key: ImageRef(g.path) for g in items}


def _cell(value) -> str:
    """A per-image score for predictions.csv: empty where there is none (NaN)."""
    return "" if value is None or (isinstance(value, float | np.floating) and np.isnan(value)) else f"{value:.6g}"


def predictions_table(
    samples: Sequence, cp: CleanPass, class_names: Sequence[str], columns: Mapping[str, np.ndarray] | None = None
) -> Table:
    """predictions.csv: path, true label, predicted label, confidence, one probability column per class,
    then per-image score columns (e.g. the Fisher scores)."""
    columns = dict(columns or {})
    pred = cp.probs.argmax(axis=1)
    extra = list(columns)
    header = ["path", "true_label", "predicted_label", "confidence"] + [f"prob_{n}" for n in class_names] + extra
    rows = []
    for j, i in enumerate(cp.sample_idx):
        row = cp.probs[j]
        rows.append(
            [samples[i].rel, class_names[cp.y_true[j]], class_names[pred[j]], f"{row[pred[j]]:.6f}"]
            + [f"{p:.6f}" for p in row]
            + [_cell(columns[c][j]) for c in extra]
        )
    return Table(header, rows)
