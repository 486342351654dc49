"""Sensitivity: Fisher scores ||p - y||^2, their tail, per-class shares and the highest-scoring images."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..analyses.fisher import DEFAULT_TAIL_THRESHOLD, FisherResult, compute_fisher, fisher_scores
from ..errors import input_error
from ..report import figures
from .base import ImageRef, Section, Where
from .common import GalleryItem, gallery, gallery_images
from .context import SectionContext


@dataclass(frozen=True)
class FisherOptions:
    threshold: float = DEFAULT_TAIL_THRESHOLD  # images with F above it form the fragile tail

    def validate(self, where: Where) -> None:
        if not 0 <= self.threshold <= 2:
            raise input_error(
                where("threshold"), f"{self.threshold} is outside [0, 2]", expected="a Fisher score between 0 and 2"
            )


@dataclass(frozen=True)
class FisherOutcome:
    fisher: FisherResult
    gallery: tuple[GalleryItem, ...]

    def to_dict(self) -> dict:
        return {"fisher": self.fisher.to_dict(), "highest_fisher_images": [g.to_dict() for g in self.gallery]}


class FisherSection(Section):
    name = "fisher"
    title = "Sensitivity: Fisher scores"
    description = "per-image Fisher scores, the fragile tail, per-class shares, highest-scoring images"
    Options = FisherOptions
    template = "sections/fisher.html"
    result_type = FisherOutcome

    def run(self, ctx: SectionContext, options: FisherOptions) -> FisherOutcome:
        cp = ctx.clean
        features = cp.features_or_none
        single = ctx.model.single_output
        result = compute_fisher(
            cp.y_true,
            cp.probs,
            class_names=ctx.class_names,
            features=features,
            threshold=options.threshold,
            n_top=ctx.config.gallery_size,
            single_output=single,
        )
        scores = fisher_scores(cp.y_true, cp.probs, features, single_output=single)
        columns = {"fisher_score": scores.fisher, "expected_fisher_score": scores.expected}
        if scores.grad_norm is not None:
            columns["last_layer_grad_norm"] = scores.grad_norm
        ctx.add_columns(columns)
        return FisherOutcome(result, gallery(ctx, result.top_indices))

    def figures(self, result: FisherOutcome) -> dict[str, bytes]:
        return {
            "fisher_histogram": figures.fisher_histogram(result.fisher),
            "fisher_by_class": figures.fisher_boxplots(result.fisher),
        }

    def images(self, result: FisherOutcome) -> dict[str, ImageRef]:
        return gallery_images(result.gallery)

    def to_json(self, result: FisherOutcome | None) -> dict[str, Any]:
        return {
            "results.fisher": result.fisher.to_dict() if result else None,
            "results.highest_fisher_images": [g.to_dict() for g in result.gallery] if result else [],
        }

    def from_json(self, doc: Mapping[str, Any]) -> FisherOutcome | None:
        res = doc.get("results", {})
        if not res.get("fisher"):
            return None
        return FisherOutcome(
            FisherResult.from_dict(res["fisher"]), tuple(GalleryItem(**g) for g in res.get("highest_fisher_images", []))
        )
