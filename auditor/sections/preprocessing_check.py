"""The preprocessing check: is the model fed the way it was trained (resize method, pixel scaling)?"""

from __future__ import annotations

from dataclasses import dataclass

from ..analyses.preprocessing import PreprocessingCheck, compute_preprocessing_check
from ..config import RESIZE_CHOICES
from ..data import stratified_subsample
from ..errors import input_error
from ..prepcheck import run_settings
from ..preprocess import SCALINGS, scale_pixels
from ..report import figures
from .base import RANK_VALIDITY, Contribution, Section, Warning, Where
from .context import SectionContext


@dataclass(frozen=True)
class PreprocessingCheckOptions:
    samples: int = 250  # images in the stratified subsample (0 skips the check)
    sequential: bool = True  # stop settings as soon as they are decided; false: every setting on every image

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
        """Forward a stratified subsample under every (resize, scaling), sequentially: a setting clearly
        worse than another, or right and wrong on the same images as the audit's, stops early (see
        :mod:`auditor.prepcheck`). The chosen setting's predictions come from the clean pass."""
        if options.samples == 0:
            return None
        cp, model = ctx.clean, ctx.model
        sub = stratified_subsample(cp.y_true, options.samples, seed=ctx.seed)
        chosen = (model.settings["resize"], model.settings["scaling"])
        resizes = RESIZE_CHOICES + ((chosen[0],) if chosen[0] not in RESIZE_CHOICES else ())
        with ctx.progress.stage("preprocessing check", len(sub)) as bar:
            run = run_settings(
                [(r, s) for r in resizes for s in SCALINGS],
                chosen,
                y_true=cp.y_true[sub],
                chosen_pred=cp.probs[sub].argmax(axis=1),
                load=lambda pos: model.load_images(sub[pos]),
                resize=lambda images, r: model.prepare(images, resize=r, scaling="raw"),  # [0, 255] floats
                finish=lambda resized, setting: scale_pixels(resized, setting[1]),
                forward=lambda x: model.forward(x)[0],
                cache_key=lambda setting: setting[0],
                batch_size=ctx.config.batch_size,
                sequential=options.sequential,
                seed=ctx.seed,
                on_images=bar.update,
            )
        return compute_preprocessing_check(
            run.y_true,
            run.predictions,
            chosen=chosen,
            status=run.status,
            forward_passes=run.forward_passes,
            forward_passes_exhaustive=run.forward_passes_exhaustive,
        )

    def figures(self, result: PreprocessingCheck) -> dict[str, bytes]:
        return {"preprocessing_grid": figures.preprocessing_grid(result)}

    def summary(self, result: PreprocessingCheck) -> Contribution:
        return Contribution(warnings=tuple(Warning(w, RANK_VALIDITY) for w in result.warnings))
