"""Data quality: files found, used and skipped (with reasons), empty classes, byte-identical images."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..analyses.dataquality import DataQuality, compute_data_quality
from .base import RANK_DATA, Contribution, Section, Warning
from .context import SectionContext


class DataQualitySection(Section):
    name = "data_quality"
    title = "Data quality"
    description = "skipped files and why, empty class folders, byte-identical images (with conflicting labels)"
    template = "sections/data_quality.html"
    result_type = DataQuality

    def run(self, ctx: SectionContext, options: Any) -> DataQuality:
        cp, samples = ctx.clean, ctx.index.samples
        skipped = sorted([(s.rel, s.reason) for s in ctx.index.skipped] + list(cp.failed))
        return compute_data_quality(
            used_paths=[samples[i].rel for i in cp.sample_idx],
            used_labels=[samples[i].label for i in cp.sample_idx],
            used_hashes=cp.hashes,
            skipped=skipped,
            labels=ctx.index.labels,
            empty_classes=ctx.index.empty_labels,
        )

    def summary(self, result: DataQuality) -> Contribution:
        return Contribution(warnings=tuple(Warning(w, RANK_DATA) for w in result.warnings))

    def to_json(self, result: DataQuality | None) -> dict[str, Any]:
        return {"data_quality": result.to_dict() if result else None}

    def from_json(self, doc: Mapping[str, Any]) -> DataQuality | None:
        return DataQuality.from_dict(doc["data_quality"]) if doc.get("data_quality") else None
