"""An example wbc-audit plug-in section: do the model's predicted class frequencies match the data's?

A whole section in one module: options, run (pure arithmetic over the clean pass), a figure, a summary
warning and its template partial (``templates/class_balance.html``). It is registered by one entry point
in the package's metadata::

    [wbc_audit.sections]
    class_balance = wbc_audit_example:ClassBalanceSection

(in a ``setup.cfg`` that is ``[options.entry_points]`` then ``wbc_audit.sections = class_balance = ...``).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from auditor.errors import input_error
from auditor.sections.base import RANK_FINDINGS, Contribution, Section, Warning, Where
from auditor.sections.context import SectionContext


@dataclass(frozen=True)
class ClassBalanceOptions:
    max_gap: float = 0.10  # warn when a class's predicted share differs from its true share by more

    def validate(self, where: Where) -> None:
        if not 0 < self.max_gap < 1:
            raise input_error(where("max_gap"), f"{self.max_gap} is outside (0, 1)", expected="a share, e.g. 0.1")


@dataclass(frozen=True)
class ClassBalance:
    class_names: tuple[str, ...]
    true_share: tuple[float, ...]
    predicted_share: tuple[float, ...]
    max_gap: float

    @property
    def worst(self) -> int:
        return int(np.argmax(np.abs(np.subtract(self.predicted_share, self.true_share))))

    def to_dict(self) -> dict:
        return {
            "class_names": list(self.class_names),
            "true_share": list(self.true_share),
            "predicted_share": list(self.predicted_share),
            "max_gap": self.max_gap,
        }

    @classmethod
    def from_dict(cls, d: dict) -> ClassBalance:
        return cls(tuple(d["class_names"]), tuple(d["true_share"]), tuple(d["predicted_share"]), d["max_gap"])


def compute_class_balance(y_true: np.ndarray, probs: np.ndarray, class_names, *, max_gap: float) -> ClassBalance:
    k = probs.shape[1]
    true = np.bincount(y_true, minlength=k) / len(y_true)
    pred = np.bincount(probs.argmax(axis=1), minlength=k) / len(y_true)
    return ClassBalance(tuple(class_names), tuple(float(v) for v in true), tuple(float(v) for v in pred), max_gap)


class ClassBalanceSection(Section):
    name = "class_balance"
    title = "Predicted class balance"
    description = "predicted against true class frequencies (an example plug-in)"
    Options = ClassBalanceOptions
    template = str(Path(__file__).parent / "templates" / "class_balance.html")
    result_type = ClassBalance

    def run(self, ctx: SectionContext, options: ClassBalanceOptions) -> ClassBalance:
        return compute_class_balance(ctx.clean.y_true, ctx.clean.probs, ctx.class_names, max_gap=options.max_gap)

    def summary(self, result: ClassBalance) -> Contribution:
        w = result.worst
        gap = result.predicted_share[w] - result.true_share[w]
        warnings = ()
        if abs(gap) > result.max_gap:
            warnings = (
                Warning(
                    f"Class balance: the model predicts {result.class_names[w]} for "
                    f"{result.predicted_share[w]:.1%} of images, but {result.true_share[w]:.1%} are "
                    f"{result.class_names[w]}.",
                    RANK_FINDINGS,
                ),
            )
        return Contribution(headline={"class_balance_max_gap": abs(gap)}, warnings=warnings)
