"""Calibration: does "90% confident" mean right 90% of the time? ECE and friends, temperature what-if."""

from __future__ import annotations

from dataclasses import dataclass

from ..analyses.calibration import N_BINS, CalibrationResult, compute_calibration
from ..errors import input_error
from ..report import figures
from .base import RANK_FINDINGS, Contribution, Section, Warning, Where
from .context import SectionContext


@dataclass(frozen=True)
class CalibrationOptions:
    bins: int = N_BINS  # equal-width confidence bins of the ECE and the reliability diagram

    def validate(self, where: Where) -> None:
        if not 2 <= self.bins <= 100:
            raise input_error(where("bins"), f"{self.bins} is outside [2, 100]", expected="a number of bins")


class CalibrationSection(Section):
    name = "calibration"
    title = "Calibration"
    description = "ECE (equal-width and adaptive), MCE, class-wise ECE, Brier, NLL, temperature what-if"
    Options = CalibrationOptions
    template = "sections/calibration.html"
    summary_template = "sections/calibration_summary.html"
    summary_inline = True
    result_type = CalibrationResult

    def run(self, ctx: SectionContext, options: CalibrationOptions) -> CalibrationResult:
        return compute_calibration(ctx.clean.y_true, ctx.clean.probs, n_bins=options.bins, seed=ctx.seed)

    def figures(self, result: CalibrationResult) -> dict[str, bytes]:
        return {
            "reliability_diagram": figures.reliability_diagram(result),
            "confidence_histogram": figures.confidence_histogram(result),
        }

    def summary(self, result: CalibrationResult) -> Contribution:
        warnings = ()
        if result.is_miscalibrated:
            warnings = (
                Warning(
                    f"{result.reading[0]} ECE {result.ece:.1%} (noise alone: about "
                    f"{result.ece_noise_floor:.1%}): do not read its confidence as the probability of being right "
                    "without recalibration (see Calibration).",
                    RANK_FINDINGS,
                ),
            )
        return Contribution(
            headline={"ece": result.ece, "brier": result.brier, "mean_confidence": result.mean_confidence},
            warnings=warnings,
        )
