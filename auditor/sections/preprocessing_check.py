"""The preprocessing check: is the model fed the way it was trained (resize method, pixel scaling)?"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analyses.preprocessing import PreprocessingCheck, compute_preprocessing_check
from ..config import RESIZE_CHOICES
from ..data import stratified_subsample
from ..errors import input_error
from ..preprocess import SCALINGS, scale_pixels
from ..report import figures
from .base import RANK_VALIDITY, Contribution, Section, Where, Warning
from .context import SectionContext


@dataclass(frozen=True)
class PreprocessingCheckOptions:
    samples: int = 250  # images in the stratified subsample (0 skips the check)

    def validate(self, where: Where) -> None:
        if self.samples < 0:
            raise input_error(where("samples"), f"{self.samples} is negative")


class PreprocessingCheckSection(Section):
    name = "preprocessing_check"
    title = "Preprocessing check"
    description = "accuracy of a subsample under every resize method and pixel scaling; flags a mismatch"
    Options = PreprocessingCheckOptions
    needs = frozenset({"clean_pass", "extra_passes", "images"})
    template = "sections/preprocessing_check.html"
    result_type = PreprocessingCheck

    def run(self, ctx: SectionContext, options: PreprocessingCheckOptions) -> PreprocessingCheck | None:
        """Forward a stratified subsample under every (resize, scaling); the analysis is pure arithmetic.

        Works in chunks of ``batch_size`` images, so memory holds one chunk per resize method at a time.
        """
        if options.samples == 0:
            return None
        cp, model = ctx.clean, ctx.model
        sub = stratified_subsample(cp.y_true, options.samples, seed=ctx.seed)
        chosen = (model.settings["resize"], model.settings["scaling"])
        resizes = RESIZE_CHOICES + ((chosen[0],) if chosen[0] not in RESIZE_CHOICES else ())
        settings = [(r, s) for r in resizes for s in SCALINGS]
        parts: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in settings}
        batch = ctx.config.batch_size
        with ctx.progress.stage("preprocessing check", len(sub)) as bar:
            for start in range(0, len(sub), batch):
                chunk = sub[start:start + batch]
                images = model.load_images(chunk)
                for r in resizes:
                    resized = model.prepare(images, resize=r, scaling="raw")  # [0, 255] floats
                    for s in SCALINGS:
                        if (r, s) == chosen:
                            parts[(r, s)].append(cp.probs[chunk].argmax(axis=1))  # the clean pass has these
                        else:
                            parts[(r, s)].append(model.forward(scale_pixels(resized, s))[0].argmax(axis=1))
                bar.update(len(chunk))
        preds = {key: np.concatenate(v) for key, v in parts.items()}
        return compute_preprocessing_check(cp.y_true[sub], preds, chosen=chosen)

    def figures(self, result: PreprocessingCheck) -> dict[str, bytes]:
        return {"preprocessing_grid": figures.preprocessing_grid(result)}

    def summary(self, result: PreprocessingCheck) -> Contribution:
        return Contribution(warnings=tuple(Warning(w, RANK_VALIDITY) for w in result.warnings))
