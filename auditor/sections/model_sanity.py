"""Model sanity: is the output usable at all? A broken model must not read as merely a bad one."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..analyses.model_sanity import ModelSanity, compute_model_sanity
from .base import RANK_BROKEN, RANK_MODEL, Contribution, Section, Warning
from .context import SectionContext


class ModelSanitySection(Section):
    name = "model_sanity"
    title = "Model sanity"
    description = (
        "outputs that do not depend on the image, one class for every image, rows not summing to 1, saturation"
    )
    template = ""  # no section of its own: a red box at the top of the summary, and its warnings
    summary_template = "sections/model_sanity_summary.html"
    result_type = ModelSanity

    def run(self, ctx: SectionContext, options: Any) -> ModelSanity:
        cp = ctx.clean
        output_type = "probabilities" if ctx.model.info.output_type == "probabilities" else "logits"
        return compute_model_sanity(
            cp.probs,
            cp.y_true,
            n_classes_in_data=len(np.unique(cp.y_true)),
            output_type=output_type,
            raw_row_sums=cp.output_stats or None,
            class_names=ctx.class_names,
        )

    def summary(self, result: ModelSanity) -> Contribution:
        return Contribution(
            headline={"model_looks_broken": result.looks_broken},
            warnings=tuple(
                Warning(w, RANK_BROKEN if w.startswith("The model looks broken") else RANK_MODEL)
                for w in result.warnings
            ),
        )
