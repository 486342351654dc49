"""Accuracy and confusion: the headline metrics with intervals, per-class table, ROC, most confident mistakes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..analyses.metrics import ClassificationMetrics, compute_classification_metrics
from ..report import figures
from .base import Contribution, ImageRef, Section
from .common import GalleryItem, gallery, gallery_images
from .context import SectionContext


@dataclass(frozen=True)
class AccuracyResult:
    metrics: ClassificationMetrics
    mistakes: tuple[GalleryItem, ...]

    def to_dict(self) -> dict:
        return {
            "classification": self.metrics.to_dict(),
            "most_confident_mistakes": [m.to_dict() for m in self.mistakes],
        }


class ClassificationSection(Section):
    name = "classification"
    title = "Accuracy and confusion"
    anchor = "accuracy"
    description = "accuracy, F1, balanced accuracy, AUC with bootstrap and Wilson intervals; confusion; mistakes"
    template = "sections/classification.html"
    summary_template = "sections/classification_summary.html"
    result_type = AccuracyResult

    def run(self, ctx: SectionContext, options: Any) -> AccuracyResult:
        cp = ctx.clean
        m = compute_classification_metrics(
            cp.y_true,
            cp.probs,
            class_names=ctx.class_names,
            n_bootstrap=ctx.config.n_bootstrap,
            seed=ctx.seed,
            n_mistakes=ctx.config.gallery_size,
        )
        return AccuracyResult(m, gallery(ctx, m.most_confident_mistakes))

    def figures(self, result: AccuracyResult) -> dict[str, bytes]:
        m = result.metrics
        return {
            "confusion_counts": figures.confusion_counts(m),
            "confusion_normalized": figures.confusion_normalized(m),
            "roc_curves": figures.roc_curves(m),
            "recall_intervals": figures.recall_intervals(m),
        }

    def images(self, result: AccuracyResult) -> dict[str, ImageRef]:
        return gallery_images(result.mistakes)

    def summary(self, result: AccuracyResult) -> Contribution:
        m = result.metrics
        return Contribution(
            headline={
                "accuracy": m.accuracy,
                "accuracy_ci": list(m.accuracy_ci),
                "f1_macro": m.f1_macro,
                "f1_macro_ci": list(m.f1_macro_ci),
                "balanced_accuracy": m.balanced_accuracy,
                "balanced_accuracy_ci": list(m.balanced_accuracy_ci),
                "roc_auc_macro": m.roc_auc_macro,
                "top2_accuracy": m.top2_accuracy,
                "n_images": m.n_samples,
                "n_classes_evaluated": len(m.evaluated_classes),
                "weakest_class": _weakest(m),
            }
        )

    def to_json(self, result: AccuracyResult | None) -> dict[str, Any]:
        return {
            "results.classification": result.metrics.to_dict() if result else None,
            "results.most_confident_mistakes": [g.to_dict() for g in result.mistakes] if result else [],
        }

    def from_json(self, doc: Mapping[str, Any]) -> AccuracyResult | None:
        res = doc.get("results", {})
        if not res.get("classification"):
            return None
        return AccuracyResult(
            ClassificationMetrics.from_dict(res["classification"]),
            tuple(GalleryItem(**g) for g in res.get("most_confident_mistakes", [])),
        )


def _weakest(m: ClassificationMetrics) -> dict[str, Any]:
    """The class with images whose recall is lowest (the first such in class order)."""
    row = min((r for r in m.per_class if r.support > 0), key=lambda r: r.recall)
    return {"name": row.name, "recall": row.recall, "support": row.support}
