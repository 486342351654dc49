"""Perturbation-severity grid: how far accuracy falls under the damage microscopes do, per kind and strength.

How the perturbed inputs are made: the subsample's images are decoded as in the clean pass and cropped and
resized to the model's input size by the audit's own settings (``prepare(channels="rgb", scaling="raw")``),
divided by 255 to [0, 1], perturbed (:mod:`auditor.perturb`), multiplied by 255, then put in the model's
channel order and scaled as the model expects (:func:`auditor.preprocess.scale_pixels`). So the damage is
done to the image the model sees, before its own scaling. The clean reference is the clean pass itself.

Forward passes are spent where they change the answer: every cell (perturbation x severity) walks the same
stratified, seeded subsample in looks of growing size (:func:`auditor.analyses.sequential.look_schedule`)
and stops once its paired interval on the accuracy drop is narrower than the precision target, or lies
wholly above the breaking threshold (:func:`auditor.analyses.perturbation.cell_should_stop`).
Perturbing runs in worker threads (OpenCV and numpy release the GIL) while the model runs the batch before.
"""

from __future__ import annotations

import collections
import dataclasses
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..analyses.perturbation import (
    BreakingPoint,
    PerturbationResult,
    PerturbationSummary,
    cell_measures,
    cell_should_stop,
    corruption_errors,
    mce,
    reading,
)
from ..analyses.perturbation import breaking_point as find_breaking_point
from ..analyses.sequential import look_schedule, stratified_order
from ..errors import input_error
from ..perturb import NAMES, PERTURBATIONS, SEVERITIES, describe, image_key, parameter, perturb_batch, perturb_image
from ..preprocess import scale_pixels
from ..report import figures
from .base import RANK_FINDINGS, Contribution, Section, Warning, Where
from .context import SectionContext, SetupContext

_GREY = np.array([0.2989, 0.5870, 0.1140], dtype=np.float32)  # as KerasClassifier.prepare for 1-channel models


@dataclass(frozen=True)
class PerturbationGridOptions:
    perturbations: tuple[str, ...] = NAMES  # which perturbations (all by default)
    severities: tuple[int, ...] = SEVERITIES  # which severities, among 1..5
    samples: int = 1000  # images in the stratified subsample (all when the data hold fewer)
    precision: float = 0.02  # a cell stops when its 95 % interval on the drop has at most this half-width
    breaking_drop: float = 0.05  # the accuracy drop that defines the breaking point
    adaptive: bool = True  # False: every cell on the whole subsample (the full grid)

    def validate(self, where: Where) -> None:
        unknown = [p for p in self.perturbations if p not in PERTURBATIONS]
        if unknown:
            raise input_error(
                where("perturbations"), f"unknown perturbation {unknown[0]!r}", expected="some of " + ", ".join(NAMES)
            )
        if not self.perturbations:
            raise input_error(where("perturbations"), "no perturbation given", expected="some of " + ", ".join(NAMES))
        if len(set(self.perturbations)) != len(self.perturbations):
            raise input_error(where("perturbations"), "a perturbation is named twice")
        bad = [s for s in self.severities if s not in SEVERITIES]
        if bad or not self.severities:
            raise input_error(
                where("severities"),
                f"{bad[0] if bad else 'no severity'} is not a severity" if bad else "no severity given",
                expected="integers from 1 to 5, e.g. 1,3,5",
            )
        if len(set(self.severities)) != len(self.severities):
            raise input_error(where("severities"), "a severity is named twice")
        if self.samples < 1:
            raise input_error(where("samples"), f"{self.samples} is not a positive number of images")
        if not self.precision > 0:
            raise input_error(where("precision"), f"{self.precision} is not positive", expected="e.g. 0.02 (2 points)")
        if self.precision >= 1:
            raise input_error(where("precision"), f"{self.precision} is 100 points or more", expected="e.g. 0.02")
        if not 0 < self.breaking_drop < 1:
            raise input_error(where("breaking_drop"), f"{self.breaking_drop} is outside (0, 1)", expected="e.g. 0.05")


@dataclass(frozen=True)
class GridOutcome:
    """The grid's numbers and, not stored in audit.json, the example strip's pixels (uint8 tiles
    ``(severities + 1, perturbations, h, w, 3)``; clean first)."""

    grid: PerturbationResult
    strip: np.ndarray | None = field(default=None, compare=False, repr=False)

    def to_dict(self) -> dict:
        return self.grid.to_dict()

    @classmethod
    def from_dict(cls, d: Mapping) -> GridOutcome:
        return cls(PerturbationResult.from_dict(d))


class PerturbationGridSection(Section):
    name = "perturbation_grid"
    title = "Robustness: perturbation-severity grid"
    description = (
        "accuracy under 13 kinds of image damage at 5 severities: paired drops with intervals, flip rates, "
        "breaking points, corruption errors, an example strip"
    )
    Options = PerturbationGridOptions
    needs = frozenset({"clean_pass", "extra_passes", "images"})
    template = "sections/perturbation_grid.html"
    summary_template = "sections/perturbation_grid_summary.html"
    summary_inline = True
    result_type = GridOutcome

    def setup(self, options: PerturbationGridOptions, ctx: SetupContext) -> None:
        n_classes = len([lab for lab, n in ctx.index.counts().items() if n > 0])
        if options.samples < n_classes:
            raise input_error(
                _flag("samples"),
                f"{options.samples} images is fewer than the {n_classes} classes with images",
                expected=f"at least {n_classes} (one per class), e.g. the default 1000",
            )

    def run(self, ctx: SectionContext, options: PerturbationGridOptions) -> GridOutcome:
        return run_grid(ctx, options)

    def across_models(self, results: Sequence[Any], models: Sequence[str], reference: int) -> Sequence[Any]:
        """Each model's mCE and relative mCE against the reference model's grid (ImageNet-C)."""
        ref = results[reference]
        if ref is None or sum(r is not None for r in results) < 2:
            return results
        out: list[Any] = []
        for i, outcome in enumerate(results):
            if outcome is None:
                out.append(None)
                continue
            vs = mce(outcome.grid, ref.grid, reference_name=models[reference], is_reference=i == reference)
            out.append(GridOutcome(dataclasses.replace(outcome.grid, versus_reference=vs), outcome.strip))
        return out

    def figures(self, outcome: GridOutcome) -> dict[str, bytes]:
        r = outcome.grid
        out = {
            "perturbation_heatmap": figures.perturbation_heatmap(r),
            "perturbation_curves": figures.perturbation_curves(r),
            "perturbation_worst_classes": figures.perturbation_class_breakdown(r),
        }
        if outcome.strip is not None:
            out["perturbation_strip"] = figures.perturbation_strip(
                outcome.strip, [PERTURBATIONS[p].label for p in r.perturbations], r.severities
            )
        return out

    def summary(self, outcome: GridOutcome) -> Contribution:
        r = outcome.grid
        worst = r.cell(*r.worst)
        headline: dict[str, Any] = {
            "robust_accuracy": r.robust_accuracy,
            "perturbation_breaking_points": {
                s.perturbation: (s.breaking.severity if s.breaking.reached else None) for s in r.summaries
            },
        }
        if r.versus_reference is not None:
            headline["perturbation_mce"] = r.versus_reference.mce
            headline["perturbation_relative_mce"] = r.versus_reference.relative_mce
            headline["perturbation_mce_reference"] = r.versus_reference.reference
        warnings = []
        early = [s for s in r.summaries if s.breaking.reached and s.breaking.severity is not None]
        early = [s for s in early if (s.breaking.severity or 0.0) <= 2]
        if early:
            warnings.append(
                Warning(
                    "Robustness: accuracy falls by "
                    f"{r.threshold * 100:.0f} points or more already at severity 2 or below under "
                    + ", ".join(f"{s.label.lower()} ({s.breaking.description})" for s in early)
                    + f"; worst cell {PERTURBATIONS[worst.perturbation].label.lower()} severity {worst.severity}: "
                    f"accuracy {worst.accuracy:.1%} (see Robustness).",
                    RANK_FINDINGS,
                )
            )
        return Contribution(headline=headline, warnings=tuple(warnings))


def _flag(key: str) -> str:
    from ..config import _flag_of

    return _flag_of("perturbation_grid", key)


# ----------------------------------------------------------------------------------------- the grid


def _to_model(x255: np.ndarray, settings: Mapping[str, str], channels_in: int) -> np.ndarray:
    """Pixels in [0, 255], RGB (n, h, w, 3) -> the model's input: grey if it takes one channel, its channel
    order, its scaling."""
    if channels_in == 1:
        x255 = (x255 @ _GREY)[..., None]
    elif settings["channels"] == "bgr":
        x255 = x255[..., ::-1]
    return scale_pixels(x255, settings["scaling"])


def perturbed_forward(
    pool: Executor,
    unit: np.ndarray,
    keys: Sequence[int],
    cells: Sequence[tuple[str, int]],
    *,
    seed: int,
    batch: int,
    ahead: int,
    to_model: Callable[[np.ndarray], np.ndarray],
    forward: Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]],
) -> Iterator[tuple[tuple[str, int], int, int, np.ndarray]]:
    """Every cell over the images ``unit`` (n, h, w, 3) in [0, 1], in batches: perturbed (and turned into the
    model's input by ``to_model``, which gets pixels in [0, 255]) in ``pool``'s threads, at most ``ahead``
    batches in flight, while this thread runs ``forward`` on the batch before. Yields ``(cell, lo, hi, probs)``
    in cell order, batch by batch (rows ``lo:hi`` of ``unit``). The bench times this very loop."""

    def make(job):
        (p, s), lo, hi = job
        x = perturb_batch(unit[lo:hi], p, s, keys=keys[lo:hi], seed=seed) * np.float32(255.0)
        return to_model(x)

    n = len(unit)
    jobs = [(cell, lo, min(lo + batch, n)) for cell in cells for lo in range(0, n, batch)]
    pending: collections.deque = collections.deque()
    it = iter(jobs)
    for job in it:  # keep a bounded number of perturbed batches in flight
        pending.append((job, pool.submit(make, job)))
        if len(pending) >= max(1, ahead):
            break
    while pending:
        job, fut = pending.popleft()
        nxt = next(it, None)
        if nxt is not None:
            pending.append((nxt, pool.submit(make, nxt)))
        p_batch, _ = forward(fut.result())
        cell, lo, hi = job
        yield cell, lo, hi, p_batch


def run_grid(ctx: SectionContext, options: PerturbationGridOptions, *, keep_strip: bool = True) -> GridOutcome:
    cp, names = ctx.clean, ctx.class_names
    k = len(names)
    n_avail = len(cp.y_true)
    notes = []
    m = min(options.samples, n_avail)
    if options.samples > n_avail:
        notes.append(
            f"The sample size asked for ({options.samples}) is larger than the {n_avail} valid images; all were used."
        )
    order = stratified_order(cp.y_true, seed=ctx.seed)[:m]  # every prefix class-stratified
    y = cp.y_true[order]
    clean_probs = cp.probs[order]
    keys = [image_key(h) for h in np.asarray(cp.hashes, dtype=object)[order]]
    settings = ctx.model.settings
    h, w, c_in = ctx.model.info.input_shape
    perts = tuple(options.perturbations)
    sevs = tuple(sorted(options.severities))
    cells = [(p, s) for p in perts for s in sevs]
    looks = look_schedule(m) if options.adaptive else (m,)
    probs = {cell: np.zeros((m, k)) for cell in cells}
    used = {cell: 0 for cell in cells}
    stopped: dict[tuple[str, int], str] = {}
    batch = ctx.config.batch_size
    workers = max(1, ctx.config.workers)
    passes = 0
    start = 0
    with ctx.progress.stage("perturbation grid", len(cells) * m) as bar, ThreadPoolExecutor(workers) as pool:
        for stop in looks:
            active = [cell for cell in cells if cell not in stopped]
            if not active:
                break
            rows = order[start:stop]
            raw = _load_rgb(ctx, rows, c_in)  # (n, h, w, 3) float [0, 255] at input size
            unit = raw / np.float32(255.0)
            for cell, lo, hi, p_batch in perturbed_forward(
                pool,
                unit,
                keys[start:stop],
                active,
                seed=ctx.seed,
                batch=batch,
                ahead=2 * workers,
                to_model=lambda x: _to_model(x, settings, c_in),
                forward=ctx.model.forward,
            ):
                probs[cell][start + lo : start + hi] = p_batch
                passes += hi - lo
                bar.update(hi - lo)
            for cell in active:
                used[cell] = stop
            start = stop
            if stop >= m:
                break
            for cell in active:
                pred = probs[cell][:stop].argmax(axis=1)
                clean_ok = clean_probs[:stop].argmax(axis=1) == y[:stop]
                ok = pred == y[:stop]
                why = cell_should_stop(
                    int(np.sum(clean_ok & ~ok)),
                    int(np.sum(~clean_ok & ok)),
                    stop,
                    precision=options.precision,
                    threshold=options.breaking_drop,
                )
                if why:
                    stopped[cell] = why
                    bar.update(m - stop)
    result_cells = []
    for p, s in cells:
        n = used[(p, s)]
        result_cells.append(
            cell_measures(
                y[:n],
                clean_probs[:n],
                probs[(p, s)][:n],
                perturbation=p,
                severity=s,
                parameter=parameter(p, s, (h, w)),
                n_classes=k,
                stopped=stopped.get((p, s), "all"),
            )
        )
    clean_acc = float(np.mean(clean_probs.argmax(axis=1) == y))
    summaries = []
    for p in perts:
        pc = [c for c in result_cells if c.perturbation == p]
        ce, rel = corruption_errors([c.accuracy for c in pc], clean_acc)
        reached, sev, par = find_breaking_point(
            [c.severity for c in pc],
            [c.drop for c in pc],
            [c.parameter for c in pc],
            identity=parameter(p, 0, (h, w)),
            threshold=options.breaking_drop,
        )
        desc = describe(p, par, (h, w)) if reached and par is not None else f"beyond severity {max(sevs)}"
        summaries.append(
            PerturbationSummary(
                p,
                PERTURBATIONS[p].label,
                PERTURBATIONS[p].parameter,
                ce,
                rel,
                BreakingPoint(p, reached, sev, par, desc),
            )
        )
    worst_cell = min(result_cells, key=lambda c: (c.accuracy, -c.severity))
    worst_p = max(summaries, key=lambda s: s.corruption_error).perturbation
    notes.append(
        f"Perturbations were applied at the model's input size ({h}x{w}) to pixels in [0, 1], after the audit's "
        f"crop and resize ({settings['resize']}, crop {settings['crop']}) and before the model's own channel order "
        f"({settings['channels']}) and scaling ({settings['scaling']})"
        + ("; the model takes grey images: perturbed in RGB, then converted to grey." if c_in == 1 else ".")
    )
    example = int(order[0])
    sample_i = cp.sample_idx[example]
    result = PerturbationResult(
        class_names=tuple(names),
        input_size=(h, w),
        perturbations=perts,
        severities=sevs,
        n_subsample=m,
        n_available=n_avail,
        clean_accuracy=clean_acc,
        clean_error=1.0 - clean_acc,
        clean_per_class=tuple(
            float(np.mean(clean_probs[y == j].argmax(axis=1) == j)) if np.any(y == j) else None for j in range(k)
        ),
        cells=tuple(result_cells),
        summaries=tuple(summaries),
        robust_accuracy=float(np.mean([c.accuracy for c in result_cells])),
        worst=(worst_cell.perturbation, worst_cell.severity),
        worst_perturbation=worst_p,
        forward_passes=passes,
        full_grid_passes=len(cells) * m,
        precision=options.precision,
        threshold=options.breaking_drop,
        seed=ctx.seed,
        reading=tuple(reading(result_cells, summaries, class_names=names, threshold=options.breaking_drop)),
        notes=tuple(notes),
        example_path=ctx.index.samples[sample_i].rel,
        example_label=names[int(cp.y_true[example])],
    )
    strip = _strip(ctx, example, keys[0], perts, sevs, c_in) if keep_strip else None
    return GridOutcome(result, strip)


def _load_rgb(ctx: SectionContext, rows: np.ndarray, c_in: int) -> np.ndarray:
    """Images of clean-pass rows, cropped and resized as the audit does, RGB float [0, 255] (n, h, w, 3)."""
    images = ctx.model.load_images([int(r) for r in rows])
    if c_in == 1:  # prepare converts to grey for such models: resize each channel as grey, then stack
        x = np.concatenate(
            [
                ctx.model.prepare(
                    [im[..., j : j + 1].repeat(3, axis=2) for im in images], channels="rgb", scaling="raw"
                )
                for j in range(3)
            ],
            axis=3,
        )
        return x / np.float32(_GREY.sum())
    return ctx.model.prepare(images, channels="rgb", scaling="raw")


def _strip(ctx: SectionContext, row: int, key: int, perts, sevs, c_in: int) -> np.ndarray:
    unit = _load_rgb(ctx, np.array([row]), c_in)[0] / np.float32(255.0)
    tiles = [[unit for _ in perts]]
    for s in sevs:
        tiles.append([perturb_image(unit, p, s, key=key, seed=ctx.seed) for p in perts])
    return np.clip(np.rint(np.asarray(tiles) * 255.0), 0, 255).astype(np.uint8)
