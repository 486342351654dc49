"""The preprocessing check: is the model fed the way it was trained (resize method of every loader family,
crop, channel order, pixel scaling)?

The space (:func:`explored_settings`) is every resize method (``plain``: the plain ``tf.image.resize`` names;
``families``: every method of :data:`auditor.resize.METHODS` and the crop ``center-square`` when some image of
the subsample has another aspect ratio than the model's input) x channel order (``rgb``, ``bgr``) x the five
scalings; the audit's own setting is added when it is outside (e.g. ``center:0.8``). A grayscale model sees no
channel order (only the audit's).

The sequential check runs it in **two stages**. Stage 1: every channel order and scaling, with the audit's
resize and crop. Stage 2: every resize method and crop, with stage 1's best channel order and scaling. The
factors differ in size: a wrong scaling or channel order costs tens of points (often a constant output), a
wrong resize kernel or crop a few, so stage 1 finds the scaling and channel order under any reasonable resize,
and the settings it leaves out (another resize *and* a scaling that lost) are ones the exhaustive check would
have dropped anyway. The exhaustive check (``sequential = false``) runs the whole space on every image; the
tests compare the two.

Cost: each image of the subsample is decoded once per decoder the resize families need (TensorFlow, PIL,
OpenCV: :func:`auditor.model.decoder_for`), resized once per (resize, crop) and batch, and channel order and
scaling are cheap numpy operations on the resized array. Resizes that give identical pixels share their
forward passes (:mod:`auditor.prepcheck`), and within each stage the sequential elimination stops settings as
soon as they are decided (:mod:`auditor.analyses.sequential`: its guarantee, that the stage's exhaustive best
is dropped with probability at most alpha, holds for any number of settings because the level divides by it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..analyses.preprocessing import PreprocessingCheck, Setting, compute_preprocessing_check, flags
from ..data import stratified_subsample
from ..errors import input_error
from ..prepcheck import run_settings
from ..preprocess import SCALINGS, scale_pixels
from ..report import figures
from ..resize import CHANNELS, METHODS, PLAIN_NAMES
from .base import RANK_PREPROCESSING, RANK_VALIDITY, Contribution, Section, Warning, Where
from .context import SectionContext


@dataclass(frozen=True)
class PreprocessingCheckOptions:
    samples: int = 250  # images in the stratified subsample (0 skips the check)
    sequential: bool = True  # stop settings as soon as they are decided; false: every setting on every image
    # "plain" (default): the plain tf.image.resize names with the audit's crop; "families": every resize method of
    # every family and the crops; both x channel orders x scalings, run in two stages when sequential
    space: str = "plain"

    def validate(self, where: Where) -> None:
        if self.samples < 0:
            raise input_error(where("samples"), f"{self.samples} is negative")
        if self.space not in ("families", "plain"):
            raise input_error(where("space"), f"unknown value {self.space!r}", expected="families or plain")


def _image_shapes(ctx: SectionContext, rows: np.ndarray) -> list[tuple[int, int]]:
    """(height, width) of the subsample's files from their headers (no decoding); unknown ones left out."""
    from PIL import Image

    shapes = []
    for j in rows:
        try:
            with Image.open(ctx.index.samples[ctx.clean.sample_idx[j]].path) as im:
                shapes.append((im.size[1], im.size[0]))
        except Exception:
            continue
    return shapes


def explored_settings(
    chosen: Setting,
    *,
    input_hw: tuple[int, int],
    image_shapes: list[tuple[int, int]],
    gray: bool = False,
    space: str = "families",
) -> list[Setting]:
    """Every setting of the check's space (the audit's own among them), in table order: resize method, then
    crop, channel order and scaling. ``space="plain"``: the plain resize names with the audit's crop;
    ``"families"``: every method of every family and, when some image's aspect ratio differs from the
    model input's, the crop ``center-square`` too. Both explore every channel order (colour models) and
    scaling. The exhaustive check runs all of them; the sequential one runs them in two stages
    (:func:`stage_one`, :func:`stage_two`)."""
    resizes, crops = _resizes_and_crops(chosen, input_hw=input_hw, image_shapes=image_shapes, space=space)
    channels = [chosen.channels] if gray else list(CHANNELS)
    out = [Setting(r, c, ch, s) for r in resizes for c in crops for ch in channels for s in SCALINGS]
    return out + ([chosen] if chosen not in out else [])


def _resizes_and_crops(
    chosen: Setting, *, input_hw: tuple[int, int], image_shapes: list[tuple[int, int]], space: str
) -> tuple[list[str], list[str]]:
    if space == "plain":
        return list(PLAIN_NAMES), [chosen.crop]
    h, w = input_hw
    crops = ["none"]
    if any(ih * w != iw * h for ih, iw in image_shapes):
        crops.append("center-square")
    return list(METHODS), crops


def stage_one(chosen: Setting, *, gray: bool = False) -> list[Setting]:
    """Stage 1 of the sequential check: every channel order and scaling, with the audit's resize and crop."""
    channels = [chosen.channels] if gray else list(CHANNELS)
    out = [Setting(chosen.resize, chosen.crop, ch, s) for ch in channels for s in SCALINGS]
    return out + ([chosen] if chosen not in out else [])


def stage_two(lead: Setting, resizes: list[str], crops: list[str]) -> list[Setting]:
    """Stage 2: every resize method and crop, with stage 1's best channel order and scaling (``lead``)."""
    out = [Setting(r, c, lead.channels, lead.scaling) for r in resizes for c in crops]
    return out + ([lead] if lead not in out else [])


def _in_subsample_order(order: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.empty_like(values)
    out[order] = values
    return out


class _DecodeCache:
    """Decoded subsample images, kept per decoder (TensorFlow, PIL, OpenCV) for the whole check, so the two stages
    and every look decode each image at most once per decoder; up to ``budget`` bytes are kept (beyond that,
    images are decoded again when asked for)."""

    def __init__(self, model, budget: int = 512 * 2**20):
        self.model, self.budget, self.used = model, budget, 0
        self.images: dict[tuple[str, int], np.ndarray] = {}

    def batch(self, rows: np.ndarray) -> _Decoded:
        return _Decoded(self, rows)

    def get(self, rows: np.ndarray, resize: str) -> list[np.ndarray]:
        kind = METHODS[resize].decoder
        missing = [int(r) for r in rows if (kind, int(r)) not in self.images]
        fresh = {}
        if missing:
            fresh = dict(zip(missing, self.model.load_images(np.asarray(missing, dtype=np.int64), resize=resize)))
        out = []
        for r in rows:
            img = self.images.get((kind, int(r)))
            if img is None:
                img = fresh[int(r)]
                if self.used + img.nbytes <= self.budget:
                    self.images[(kind, int(r))] = img
                    self.used += img.nbytes
            out.append(img)
        return out


class _Decoded:
    """The images of one batch, taken from the cache once per decoder."""

    def __init__(self, cache: _DecodeCache, rows: np.ndarray):
        self.cache, self.rows = cache, rows
        self.by_decoder: dict[str, list[np.ndarray]] = {}

    def get(self, resize: str) -> list[np.ndarray]:
        kind = METHODS[resize].decoder
        if kind not in self.by_decoder:
            self.by_decoder[kind] = self.cache.get(self.rows, resize)
        return self.by_decoder[kind]


class PreprocessingCheckSection(Section):
    name = "preprocessing_check"
    title = "Preprocessing check"
    description = (
        "accuracy of a subsample under every resize method (all loader families), crop, channel order and "
        "pixel scaling; flags a mismatch and names the flags to re-run with"
    )
    Options = PreprocessingCheckOptions
    needs = frozenset({"clean_pass", "extra_passes", "images"})
    template = "sections/preprocessing_check.html"
    result_type = PreprocessingCheck

    def run(self, ctx: SectionContext, options: PreprocessingCheckOptions) -> PreprocessingCheck | None:
        """Forward a stratified subsample under every setting, sequentially: a setting clearly worse than
        another, or right and wrong on the same images as the audit's, stops early (see
        :mod:`auditor.prepcheck`). The chosen setting's predictions come from the clean pass."""
        if options.samples == 0:
            return None
        cp, model = ctx.clean, ctx.model
        sub = stratified_subsample(cp.y_true, options.samples, seed=ctx.seed)
        st = model.settings
        chosen = Setting(st["resize"], st["crop"], st["channels"], st["scaling"])
        h, w, c = model.info.input_shape
        gray = c == 1
        shapes = _image_shapes(ctx, sub) if options.space == "families" else []
        resizes, crops = _resizes_and_crops(chosen, input_hw=(h, w), image_shapes=shapes, space=options.space)
        full = explored_settings(chosen, input_hw=(h, w), image_shapes=shapes, gray=gray, space=options.space)
        y_sub = cp.y_true[sub]
        chosen_pred = cp.probs[sub].argmax(axis=1)
        chosen_lp = np.log(np.maximum(cp.probs[sub][np.arange(len(sub)), y_sub], 1e-300))

        def resize(decoded: _Decoded, key: tuple[str, str, str]) -> np.ndarray:
            r, crop, channels = key
            return model.prepare(decoded.get(r), resize=r, crop=crop, channels=channels, scaling="raw")

        def finish(resized: np.ndarray, s: Setting) -> np.ndarray:
            if not gray and s.channels == "bgr":
                resized = resized[..., ::-1]
            return scale_pixels(resized, s.scaling)

        stages = 2 if options.sequential else 1
        decoded = _DecodeCache(model)
        with ctx.progress.stage("preprocessing check", stages * len(sub)) as bar:
            common = dict(
                y_true=y_sub,
                load=lambda pos: decoded.batch(sub[pos]),
                resize=resize,
                finish=finish,
                forward=lambda x: model.forward(x)[0],
                # colour models: one resize (RGB) per method and crop, the channel flip in finish
                cache_key=lambda s: (s.resize, s.crop, s.channels if gray else "rgb"),
                finish_key=lambda s: (s.channels, s.scaling),
                batch_size=ctx.config.batch_size,
                sequential=options.sequential,
                seed=ctx.seed,
                on_images=bar.update,
            )
            if not options.sequential:  # the exhaustive check: every setting of the space on every image
                run = run_settings(full, chosen, chosen_pred=chosen_pred, chosen_log_prob=chosen_lp, **common)
                y_eval, predictions, log_probs, status = run.y_true, run.predictions, run.log_probs, run.status
                passes = run.forward_passes
            else:
                # stage 1: channel order x scaling with the audit's resize and crop; their mistakes are gross (a
                # wrong scaling or channel order costs tens of points, a wrong resize kernel a few), so the best of
                # them is the one to try every resize method and crop with in stage 2
                # a wrong scaling or channel order shows within a few images (often as a constant output), so
                # stage 1 looks first after 16 images
                run1 = run_settings(
                    stage_one(chosen, gray=gray),
                    chosen,
                    chosen_pred=chosen_pred,
                    chosen_log_prob=chosen_lp,
                    first_look=16,
                    **common,
                )
                lead = compute_preprocessing_check(
                    run1.y_true, run1.predictions, chosen=chosen, status=run1.status
                ).best
                run2 = run_settings(
                    stage_two(lead, resizes, crops),
                    lead,
                    chosen_pred=_in_subsample_order(run1.order, run1.predictions[lead]),
                    chosen_log_prob=_in_subsample_order(run1.order, run1.log_probs[lead]),
                    # a "tied" setting counts with the audit's own accuracy, so settings may only be tied with it:
                    # when stage 1 found another scaling or channel order, stage 2 runs without the tie rule
                    n_tie=128 if lead == chosen else None,
                    **common,
                )
                y_eval = run1.y_true
                predictions = {**run1.predictions, **run2.predictions}
                log_probs = {**run1.log_probs, **run2.log_probs}
                status = {**run1.status, **run2.status}
                passes = run1.forward_passes + run2.forward_passes
        return compute_preprocessing_check(
            y_eval,
            predictions,
            chosen=chosen,
            status=status,
            log_probs=log_probs,
            forward_passes=passes,
            forward_passes_exhaustive=(len(full) - 1) * len(sub),
        )

    def figures(self, result: PreprocessingCheck) -> dict[str, bytes]:
        return {"preprocessing_grid": figures.preprocessing_grid(result)}

    def summary(self, result: PreprocessingCheck) -> Contribution:
        warnings = [Warning(w, RANK_VALIDITY) for w in result.warnings]
        headline = {}
        if result.doubtful:
            headline["preprocessing_doubtful"] = True
            warnings.insert(
                0,
                Warning(
                    "Preprocessing doubtful: the numbers in this report were probably measured on pixels the "
                    f"model was not trained on. Re-running with {flags(result.best)} scores "
                    f"{(result.best_accuracy - result.chosen_accuracy) * 100:.1f} points higher on the check's "
                    f"{result.n_samples}-image subsample ({result.best_accuracy:.1%} against "
                    f"{result.chosen_accuracy:.1%}); see the preprocessing check.",
                    RANK_PREPROCESSING,
                ),
            )
        return Contribution(headline=headline, warnings=tuple(warnings))
