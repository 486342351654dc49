"""Selective prediction: when to refer a cell; risk-coverage curve, AURC and operating points."""

from __future__ import annotations

from dataclasses import dataclass

from ..analyses.selective import DEFAULT_TARGETS, SelectiveResult, compute_selective
from ..errors import input_error
from ..report import figures
from .base import Contribution, Section, Where
from .context import SectionContext


@dataclass(frozen=True)
class SelectiveOptions:
    target_accuracies: tuple[float, ...] = tuple(DEFAULT_TARGETS)  # accuracies of the operating points

    def validate(self, where: Where) -> None:
        if not self.target_accuracies or any(not 0 < t <= 1 for t in self.target_accuracies):
            raise input_error(
                where("target_accuracies"),
                f"{list(self.target_accuracies)} is not a list of accuracies",
                expected="values in (0, 1], e.g. 0.95,0.99",
            )


class SelectiveSection(Section):
    name = "selective_prediction"
    title = "Selective prediction: when to refer a cell"
    anchor = "selective"
    description = "risk-coverage curve, AURC against oracle and random, confidence thresholds for target accuracies"
    Options = SelectiveOptions
    template = "sections/selective_prediction.html"
    summary_template = "sections/selective_prediction_summary.html"
    summary_inline = True
    result_type = SelectiveResult

    def run(self, ctx: SectionContext, options: SelectiveOptions) -> SelectiveResult:
        return compute_selective(ctx.clean.y_true, ctx.clean.probs, targets=options.target_accuracies)

    def figures(self, result: SelectiveResult) -> dict[str, bytes]:
        return {"risk_coverage": figures.risk_coverage_curve(result)}

    def summary(self, result: SelectiveResult) -> Contribution:
        return Contribution(
            headline={
                "operating_points": [
                    {
                        "target_accuracy": p.target_accuracy,
                        "coverage": p.coverage,
                        "threshold": p.threshold,
                        "reachable": p.reachable,
                    }
                    for p in result.operating_points
                ],
                "aurc": result.aurc,
            }
        )
