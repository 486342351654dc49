"""Grad-CAM: where the model looks, how much of that is on the white cell, and whether the maps depend on
the model at all.

For a stratified, seeded subsample of the clean pass (``max_images``; every panel image is added to it), the
images are prepared as in the clean pass and Grad-CAM (or Grad-CAM++) maps of the *predicted* class are taken
at the target layer (:meth:`auditor.model.KerasClassifier.gradcam`: one gradient tape per batch, the score
before the softmax). The white cell is segmented on the image at the model's input size
(:func:`auditor.cellmask.cell_mask`) and the focus score is the share of the map's energy inside the mask
(:func:`auditor.analyses.gradcam.focus_score`), NaN (empty in predictions.csv) where segmentation failed or
the image got no map. The sanity check re-draws the top layers of a reloaded copy of the model, cascading down
through the last convolution, and compares the maps by Spearman rank correlation (Adebayo et al. 2018).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..analyses._common import jsonable
from ..analyses.gradcam import (
    DEFAULT_FOCUS_THRESHOLD,
    METHODS,
    CamNotApplicable,
    FocusResult,
    SanityResult,
    focus_score,
    sanity_summary,
    summarise_focus,
)
from ..analyses.sequential import stratified_order
from ..cellmask import cell_mask
from ..errors import input_error
from ..report import figures
from .base import RANK_FINDINGS, Contribution, Section, Warning, Where
from .common import GalleryItem, gallery
from .context import SectionContext, SetupContext


@dataclass(frozen=True)
class GradcamOptions:
    method: str = "gradcam"  # gradcam | gradcam++
    layer: str = ""  # target layer path (outer/inner); empty: the last spatial layer before the pooling
    images_per_class: int = 3  # panel images per class, for correct and for wrong predictions
    focus_threshold: float = DEFAULT_FOCUS_THRESHOLD  # focus score below it: "looks outside the cell"
    sanity_check: bool = True  # run the cascading-randomisation check
    sanity_images: int = 16  # images in the sanity check
    max_images: int = 500  # images that get a map (a stratified subsample; panel images always do)

    def validate(self, where: Where) -> None:
        if self.method not in METHODS:
            raise input_error(where("method"), f"unknown method {self.method!r}", expected=" or ".join(METHODS))
        if not 0 <= self.images_per_class <= 20:
            raise input_error(where("images_per_class"), f"{self.images_per_class} is outside 0..20")
        if not 0 <= self.focus_threshold <= 1:
            raise input_error(where("focus_threshold"), f"{self.focus_threshold} is outside [0, 1]")
        if self.max_images < 1 or self.sanity_images < 1:
            raise input_error(where("max_images"), "needs at least one image")


@dataclass(frozen=True)
class CamPanel:
    """One panel image: what the model said, its focus score, and (not stored in audit.json) the pixels."""

    item: GalleryItem
    group: str  # "<class>: correct" | "<class>: wrong" | "highest Fisher"
    focus: float | None  # None: the cell could not be segmented
    image: np.ndarray | None = field(default=None, compare=False, repr=False)  # uint8 (h, w, 3)
    cam: np.ndarray | None = field(default=None, compare=False, repr=False)  # float (h, w) in [0, 1]
    mask: np.ndarray | None = field(default=None, compare=False, repr=False)  # bool (h, w)

    def to_dict(self) -> dict:
        return {"item": self.item.to_dict(), "group": self.group, "focus": jsonable(self.focus)}


@dataclass(frozen=True)
class GradcamOutcome:
    applicable: bool
    reason: str = ""  # why Grad-CAM does not apply
    method: str = ""
    layer: str = ""
    map_shape: tuple[int, int] = (0, 0)
    score: str = ""
    n_maps: int = 0
    n_segmentation_failed: int = 0
    focus: FocusResult | None = None
    sanity: SanityResult | None = None
    sanity_error: str = ""
    panels: tuple[CamPanel, ...] = ()

    def to_dict(self) -> dict:
        d = jsonable({k: getattr(self, k) for k in ("applicable", "reason", "method", "layer", "map_shape")})
        d.update(
            score=self.score,
            n_maps=self.n_maps,
            n_segmentation_failed=self.n_segmentation_failed,
            focus=self.focus.to_dict() if self.focus else None,
            sanity=self.sanity.to_dict() if self.sanity else None,
            sanity_error=self.sanity_error,
            panels=[p.to_dict() for p in self.panels],
        )
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> GradcamOutcome:
        return cls(
            applicable=bool(d["applicable"]),
            reason=d.get("reason", ""),
            method=d.get("method", ""),
            layer=d.get("layer", ""),
            map_shape=tuple(d.get("map_shape", (0, 0))),
            score=d.get("score", ""),
            n_maps=int(d.get("n_maps", 0)),
            n_segmentation_failed=int(d.get("n_segmentation_failed", 0)),
            focus=FocusResult.from_dict(d["focus"]) if d.get("focus") else None,
            sanity=SanityResult.from_dict(d["sanity"]) if d.get("sanity") else None,
            sanity_error=d.get("sanity_error", ""),
            panels=tuple(CamPanel(GalleryItem(**p["item"]), p["group"], p.get("focus")) for p in d.get("panels", [])),
        )

    def groups(self) -> list[tuple[str, list[CamPanel]]]:
        out: dict[str, list[CamPanel]] = {}
        for p in self.panels:
            out.setdefault(p.group, []).append(p)
        return list(out.items())


class GradcamSection(Section):
    name = "gradcam"
    title = "Explanations: Grad-CAM and cell focus"
    description = (
        "Grad-CAM panels per class (confident correct, confident mistakes, highest Fisher), the share of "
        "the map on the segmented white cell, and a weight-randomisation sanity check"
    )
    Options = GradcamOptions
    # opt-in (--enable gradcam): a gradient pass per mapped image is costly on large models; make demo enables it
    default_enabled = False
    needs = frozenset({"clean_pass", "images", "gradients"})
    template = "sections/gradcam.html"
    result_type = GradcamOutcome

    def setup(self, options: GradcamOptions, ctx: SetupContext) -> None:
        """A layer path that does not exist or has no spatial output is an input error (listing the candidate
        layers) before any model time; a model without a convolutional layer is not: ``run`` reports it."""
        if options.layer and ctx.model is not None:
            from ..config import _flag_of

            try:
                ctx.model.cam_target(options.layer, source=_flag_of("gradcam", "layer"))
            except CamNotApplicable:
                pass

    def run(self, ctx: SectionContext, options: GradcamOptions) -> GradcamOutcome:
        return run_gradcam(ctx, options)

    def figures(self, result: GradcamOutcome) -> dict[str, bytes]:
        out = {}
        groups = result.groups()
        columns = max((len(panels) for _, panels in groups), default=0)  # one tile scale for every group
        for i, (group, panels) in enumerate(groups):
            if all(p.image is not None for p in panels):
                out[f"gradcam_panel_{i}"] = figures.gradcam_panels(panels, group, columns)
        return out

    def summary(self, result: GradcamOutcome) -> Contribution:
        if not result.applicable:
            return Contribution(headline={"gradcam_applicable": False})
        f = result.focus
        headline: dict[str, Any] = {
            "gradcam_layer": result.layer,
            "cell_focus_median": f.overall.median if f else None,
            "cell_focus_below_threshold": f.overall.n_outside if f else None,
            "gradcam_sanity_median_spearman": result.sanity.stages[-1].median_spearman
            if result.sanity and result.sanity.stages
            else None,
        }
        warnings = []
        if f and f.overall.n_scored and f.overall.median is not None and f.overall.median < f.threshold:
            warnings.append(
                Warning(
                    f"Grad-CAM: the median image has only {f.overall.median:.0%} of its map on the white cell "
                    f"(below {f.threshold:.0%}); {f.overall.n_outside} of {f.overall.n_scored} images look "
                    "outside the cell (see Explanations).",
                    RANK_FINDINGS,
                )
            )
        if result.sanity and result.sanity.flagged:
            s = result.sanity.stages[-1]
            warnings.append(
                Warning(
                    f"Grad-CAM sanity check: with the layers down to '{s.layer}' randomised, the maps still rank-"
                    f"correlate {s.median_spearman:.2f} (median) with the trained ones: they do not explain this "
                    "model's decisions.",
                    RANK_FINDINGS,
                )
            )
        return Contribution(headline=headline, warnings=tuple(warnings))


# ------------------------------------------------------------------------------------------ the run


def _panel_rows(ctx: SectionContext, per_class: int) -> list[tuple[str, int]]:
    """(group, clean-pass row) for the panels: per class the most confident correct and wrong predictions,
    then the highest-Fisher images (from the Fisher section, when it ran)."""
    cp, names = ctx.clean, ctx.class_names
    pred = cp.probs.argmax(axis=1)
    conf = cp.probs.max(axis=1)
    out: list[tuple[str, int]] = []
    for k, name in enumerate(names):
        for right, label in ((True, "correct"), (False, "wrong")):
            rows = np.flatnonzero((cp.y_true == k) & ((pred == k) == right))
            rows = rows[np.argsort(-conf[rows], kind="stable")][:per_class]
            out += [(f"{name}: {label}", int(r)) for r in rows]
    fisher = ctx.results.get("fisher")
    for g in getattr(fisher, "gallery", ())[: max(per_class, 1)]:
        out.append(("highest Fisher", int(g.index)))
    return out


def run_gradcam(ctx: SectionContext, options: GradcamOptions) -> GradcamOutcome:
    try:
        target = ctx.model.cam_target(options.layer or None)
    except CamNotApplicable as exc:
        return GradcamOutcome(applicable=False, reason=str(exc))
    cp = ctx.clean
    n = len(cp.y_true)
    pred = cp.probs.argmax(axis=1)
    panel_rows = _panel_rows(ctx, options.images_per_class)
    order = stratified_order(cp.y_true, seed=ctx.seed)[: min(options.max_images, n)]
    rows = list(dict.fromkeys([r for _, r in panel_rows] + [int(r) for r in order]))
    focus = np.full(n, np.nan)
    kept: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
    want = {r for _, r in panel_rows}
    n_failed = 0
    batch = ctx.config.batch_size
    sanity_rows = [int(r) for r in order[: options.sanity_images]]
    sanity_x: list[np.ndarray] = []
    trained_sanity: dict[int, np.ndarray] = {}
    with ctx.progress.stage("grad-cam", len(rows)) as bar:
        for lo in range(0, len(rows), batch):
            chunk = rows[lo : lo + batch]
            images = ctx.model.load_images(chunk)
            x = ctx.model.prepare(images)
            shown = np.clip(np.rint(ctx.model.prepare(images, channels="rgb", scaling="raw")), 0, 255).astype(np.uint8)
            maps = ctx.model.gradcam(x, pred[chunk], layer=options.layer or None, method=options.method)
            for j, r in enumerate(chunk):
                mask = cell_mask(shown[j])
                if mask is None:
                    n_failed += 1
                focus[r] = focus_score(maps[j], mask)
                if r in want:
                    kept[r] = (shown[j], maps[j], mask)
                if r in sanity_rows:
                    sanity_x.append(x[j])
                    trained_sanity[r] = maps[j]
            bar.update(len(chunk))
    mapped = np.zeros(n, dtype=bool)
    mapped[rows] = True
    ctx.add_columns({"cell_focus": focus})
    result = summarise_focus(focus[mapped], cp.y_true[mapped], pred[mapped], ctx.class_names, options.focus_threshold)
    items = gallery(ctx, [r for _, r in panel_rows])
    panels = tuple(
        CamPanel(
            item,
            group,
            None if np.isnan(focus[r]) else float(focus[r]),
            kept[r][0],
            kept[r][1],
            kept[r][2],
        )
        for (group, r), item in zip(panel_rows, items, strict=True)
    )
    sanity = None
    sanity_error = ""
    if options.sanity_check and sanity_x:
        srows = [r for r in rows if r in trained_sanity]  # the order sanity_x was filled in
        trained = np.stack([trained_sanity[r] for r in srows])
        try:
            stages = ctx.model.cam_sanity(
                np.stack(sanity_x), pred[srows], layer=options.layer or None, method=options.method, seed=ctx.seed
            )
            sanity = sanity_summary(trained, stages)
        except Exception as exc:  # the check is an extra; its failure is said, the maps stand
            sanity_error = f"{type(exc).__name__}: {' '.join(str(exc).split())}"
    return GradcamOutcome(
        applicable=True,
        method=options.method,
        layer=target.layer,
        map_shape=tuple(target.map_shape),
        score=target.score,
        n_maps=int(mapped.sum()),
        n_segmentation_failed=n_failed,
        focus=result,
        sanity=sanity,
        sanity_error=sanity_error,
        panels=panels,
    )
