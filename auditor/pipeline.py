"""``run_audit(config)``: orchestration of one audit per model, and nothing else.

data discovery -> model loading, class matching and every section's set-up (all input errors raised here,
before any forward pass) -> one clean pass -> the enabled sections in registry order (each failure
recorded, not raised) -> the report. The pipeline names no section.
"""

from __future__ import annotations

import dataclasses
import platform
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from . import SCHEMA_VERSION, __version__
from .classes import ClassMapping, resolve_classes
from .config import AuditConfig
from .data import DatasetIndex, discover, fingerprint, iter_batches, load_sample
from .errors import input_error
from .progress import QUIET, Progress
from .report.document import Artifacts, AuditReport, Failure
from .resize import DEFAULT_CHANNELS, DEFAULT_CROP, DEFAULT_RESIZE, METHODS
from .sections import Registry, registry
from .sections.base import RANK_DATA, RANK_FAILURES, RANK_MODEL, Warning
from .sections.common import predictions_table
from .sections.context import CleanPass, ModelAccess, SectionContext, SetupContext, describe_exception
from .sidecar import Sidecar, load_sidecar


@dataclass
class PreparedModel:
    """A loaded model with everything decided about how to feed it."""

    path: Path
    adapter: Any  # auditor.model.KerasClassifier
    sidecar: Sidecar | None
    mapping: ClassMapping
    scaling: str
    scaling_source: str
    resize: str
    resize_source: str
    crop: str = DEFAULT_CROP
    crop_source: str = "default (no crop)"
    channels: str = DEFAULT_CHANNELS
    channels_source: str = "default (RGB, as every Keras loader)"
    plans: dict[str, Any] = field(default_factory=dict)  # section name -> what its setup returned

    def prepare(self, images, **overrides) -> np.ndarray:
        """``adapter.prepare`` with this model's resize, scaling, crop and channel order (any overridden)."""
        kw = {"resize": self.resize, "scaling": self.scaling, "crop": self.crop, "channels": self.channels}
        kw.update(overrides)
        return self.adapter.prepare(images, **kw)

    @property
    def decoder(self):
        """How to decode files so their pixels are the ones the training loader of ``resize`` saw."""
        from .model import decoder_for

        return decoder_for(self.resize)

    def preprocessing_dict(self) -> dict:
        """What the report stores under ``preprocessing``."""
        method = METHODS[self.resize]
        decode = {
            "tf": "tf.io.decode_image for JPEG files (as keras image_dataset_from_directory), OpenCV for the others",
            "pil": "PIL Image.open + convert('RGB') (as keras.utils.load_img)",
            "cv2": "OpenCV cv2.imdecode",
        }[method.decoder]
        return {
            "scaling": self.scaling,
            "scaling_source": self.scaling_source,
            "resize": self.resize,
            "resize_source": self.resize_source,
            "resize_call": method.call,
            "resize_reproduces": method.reproduces,
            "decode": decode,
            "crop": self.crop,
            "crop_source": self.crop_source,
            "channels": self.channels,
            "channels_source": self.channels_source,
        }


def run_audit(
    config: AuditConfig,
    *,
    progress: Progress = QUIET,
    write: Callable | None = None,
    sections: Registry | None = None,
    write_comparison: Callable | None = None,
) -> list[AuditReport]:
    """Audit every model in ``config`` on its data set; return the reports (each written when ``write``).

    ``write(report, config)`` persists one report and returns its folder, which is recorded in
    ``report.artifacts.out_dir``; the CLI passes :func:`auditor.history.write_report`. With several models the
    returned list (:class:`auditor.compare.AuditRun`) also holds their ``comparison`` (built from the clean
    passes and section results, no model time but a speed measurement), written by
    ``write_comparison(comparison, config)`` (:func:`auditor.history.write_comparison`) into ``comparison_dir``.
    """
    from .compare import AuditRun, build_comparison, shared_classes, with_dirs

    config.require_inputs()
    config.reference_index()  # --reference names one of the models (checked before any model time)
    reg = sections or registry()
    index = discover(config.data_path)
    if not index.samples:
        raise input_error(
            config.data_path,
            "holds no image file",
            expected="images with extension jpg, jpeg, png, bmp, tif or tiff inside class folders",
        )
    enabled = [s for s in reg.sections if config.is_enabled(s.name, s.default_enabled)]
    prepared = [prepare_model(config, path, index) for path in config.model_paths]
    for pm in prepared:  # every section's input checks, before any model time is spent
        setup = SetupContext(config, index, pm.mapping.model_classes, pm.path, model=pm.adapter)
        for section in enabled:
            pm.plans[section.name] = section.setup(config.options(section.name), setup)
    if len(prepared) > 1:
        shared_classes(prepared)  # models sharing no class: an input error before any model time
    passes = clean_passes(prepared, index, config, progress)  # one decode for all models
    reports = [
        audit_model(config, pm, index, progress, enabled=enabled, registry=reg, clean=cp)
        for pm, cp in zip(prepared, passes)
    ]
    if len(reports) > 1:
        reports = compare_models(reports, prepared, config.reference_index(), enabled, reg)
    for report in reports:  # each report written whole (write_report moves a finished folder into place)
        if write:
            report.artifacts.out_dir = write(report, config)
    run = AuditRun(reports)
    if len(reports) > 1:
        comparison = with_dirs(build_comparison(config, reports, prepared, passes, index, progress=progress), reports)
        run.comparison = comparison
        if write_comparison:
            run.comparison_dir = write_comparison(comparison, config)
    return run


def compare_models(
    reports: Sequence[AuditReport],
    prepared: Sequence[PreparedModel],
    reference: int,
    enabled: Sequence[Any],
    reg: Registry,
) -> list[AuditReport]:
    """The cross-model step of a run that audits several models: every enabled section's ``across_models``
    sees its results of all models (None where it did not run) and may replace them; a report whose results
    changed gets its summary rebuilt. A section that raises here is recorded as a failure of every report."""
    names = [pm.path.name for pm in prepared]
    if len(set(names)) < len(names):  # two models with one file name: name them by their paths
        names = [str(pm.path) for pm in prepared]
    results = [dict(r.results) for r in reports]
    failures = [list(r.failures) for r in reports]
    changed = [False] * len(reports)
    for section in enabled:
        before = [res.get(section.name) for res in results]
        try:
            after = list(section.across_models(before, names, reference))
        except Exception as exc:
            for f in failures:
                f.append(Failure(f"{section.name} (across models)", describe_exception(exc)))
            changed = [True] * len(reports)
            continue
        for i, (old, new) in enumerate(zip(before, after)):
            if new is not old:
                changed[i] = True
                if new is None:
                    results[i].pop(section.name, None)
                else:
                    results[i][section.name] = new
    return [
        dataclasses.replace(
            report,
            results=results[i],
            failures=tuple(failures[i]),
            summary=build_summary(reg, results[i], failures[i], pm),
        )
        if changed[i]
        else report
        for i, (report, pm) in enumerate(zip(reports, prepared))
    ]


def _labels_with_images(index: DatasetIndex) -> list[str]:
    return [lab for lab, n in index.counts().items() if n > 0]


def _decided(
    option: str | None, flag: str, from_sidecar: str | None, default: str, default_text: str
) -> tuple[str, str]:
    """A preprocessing setting and where it came from: the option, else the sidecar, else the default."""
    if option:
        return option, flag
    if from_sidecar:
        return from_sidecar, "sidecar"
    return default, default_text


def prepare_model(config: AuditConfig, path: Path, index: DatasetIndex) -> PreparedModel:
    """Load the model and decide class order, scaling and resize. Raises InputError on any mismatch."""
    from .model import KerasClassifier  # TensorFlow is imported here, not at package import

    sidecar = load_sidecar(path)
    adapter = KerasClassifier(
        path, unsafe=config.unsafe_deserialization, input_size=sidecar.input_size if sidecar else None
    )
    if sidecar and sidecar.input_size and tuple(sidecar.input_size) != adapter.input_shape[:2]:
        raise input_error(
            sidecar.path,
            f"says input_size {list(sidecar.input_size)} but the model takes {list(adapter.input_shape[:2])}",
        )
    labels_with_images = _labels_with_images(index)
    mapping = resolve_classes(
        adapter.n_outputs,
        data_labels=index.labels,
        labels_with_images=labels_with_images,
        sidecar_names=sidecar.class_names if sidecar else None,
        sidecar_path=sidecar.path if sidecar else None,
        cli_names=config.class_names,
        data_path=config.data_path,
    )
    if config.preprocess != "auto":
        scaling, scaling_source = config.preprocess, "--preprocess"
    elif sidecar and sidecar.preprocess:
        scaling, scaling_source = sidecar.preprocess, "sidecar"
    elif adapter.info.base_family:  # a keras.applications family recognised in the model (auditor.families)
        scaling, scaling_source = adapter.info.base_scaling, f"auto: {adapter.info.base_note}"
    elif adapter.info.starts_with_rescaling:
        scaling, scaling_source = "raw", "auto: the model starts with its own Rescaling/Normalization layer"
    else:
        scaling, scaling_source = "unit", "auto: default (no sidecar, no rescaling layer in the model)"
    resize, resize_source = _decided(
        config.resize,
        "--resize",
        sidecar and sidecar.resize,
        DEFAULT_RESIZE,
        "default (as keras.utils.image_dataset_from_directory)",
    )
    crop, crop_source = _decided(config.crop, "--crop", sidecar and sidecar.crop, DEFAULT_CROP, "default (no crop)")
    channels, channels_source = _decided(
        config.channels,
        "--channels",
        sidecar and sidecar.channel_order,
        DEFAULT_CHANNELS,
        "default (RGB, as every Keras loader)",
    )
    return PreparedModel(
        path,
        adapter,
        sidecar,
        mapping,
        scaling,
        scaling_source,
        resize,
        resize_source,
        crop,
        crop_source,
        channels,
        channels_source,
    )


def clean_pass(
    pm: PreparedModel,
    index: DatasetIndex,
    config: AuditConfig,
    progress: Progress,
    *,
    data_to_model: dict[str, int] | None = None,
    stage: str = "model pass",
    data_path: Path | str | None = None,
) -> CleanPass:
    """One streaming pass: decode + resize + scale in threads, forward; keep per-sample vectors only.

    ``data_to_model`` maps data labels to model outputs (default: the model's main class mapping).
    """
    data_to_model = pm.mapping.data_to_model if data_to_model is None else data_to_model
    adapter = pm.adapter
    samples = index.samples
    n, k = len(samples), adapter.n_outputs
    probs = np.zeros((n, k), dtype=np.float64)
    feats = None
    ok = np.zeros(n, dtype=bool)
    failed: list[tuple[str, str]] = []
    all_hashes: dict[int, str] = {}
    t0 = time.perf_counter()
    if hasattr(adapter, "reset_output_stats"):
        adapter.reset_output_stats()  # output_stats then describe this pass only (read by the model-sanity section)

    def to_input(image: np.ndarray) -> np.ndarray:
        # per image, in the decode threads: resize + scale overlap the forward pass of the batch before
        # (one image at a time gives the same pixels as a batch: tested bit for bit)
        return pm.prepare([image])[0]

    with progress.stage(stage, n) as bar:
        for batch in iter_batches(
            samples, config.batch_size, workers=config.workers, decoder=pm.decoder, transform=to_input
        ):
            all_hashes.update(batch.hashes)
            failed.extend((samples[f.index].rel, f.error) for f in batch.failed)
            if batch.indices:
                x = np.stack(batch.images)
                p, f = adapter.forward(x)
                if feats is None:
                    feats = np.zeros((n, f.shape[1]), dtype=np.float32)
                idx = np.asarray(batch.indices)
                probs[idx], feats[idx], ok[idx] = p, f, True
            bar.update(len(batch.indices) + len(batch.failed))
    seconds = time.perf_counter() - t0
    if not ok.any():
        raise input_error(
            data_path or config.data_path,
            f"holds no readable image: all {n} image files failed to decode (first: {failed[0][0]}: {failed[0][1]})",
        )
    sel = np.flatnonzero(ok)
    y_true = np.array([data_to_model[samples[i].label] for i in sel], dtype=np.int64)
    if feats is None:
        feats = np.zeros((n, 0), dtype=np.float32)
    stats = dict(adapter.output_stats) if hasattr(adapter, "output_stats") else {}
    return CleanPass(sel, y_true, probs[sel], feats[sel], tuple(failed), all_hashes, seconds, stats)


def clean_passes(
    prepared: Sequence[PreparedModel], index: DatasetIndex, config: AuditConfig, progress: Progress = QUIET
) -> list[CleanPass]:
    """The clean passes of several models with each file read and decoded once per decoder.

    Models are grouped by decoder (``PreparedModel.decoder``: the resize method's loader decides how JPEGs
    are decoded); within a group the images are decoded once and streamed batch by batch to each model in
    turn, each with its own resize, crop, channel order and scaling (done per image in the decode threads,
    as :func:`clean_pass` does, so the pixels are the same bit for bit). A group of one model is
    :func:`clean_pass` itself. Memory holds a bounded number of batches whatever the data set size.
    """
    groups: dict[str, list[int]] = {}
    for i, pm in enumerate(prepared):
        groups.setdefault(METHODS[pm.resize].decoder, []).append(i)
    out: list[CleanPass | None] = [None] * len(prepared)
    for members in groups.values():
        if len(members) == 1:
            out[members[0]] = clean_pass(prepared[members[0]], index, config, progress)
        else:
            for i, cp in zip(members, _shared_pass([prepared[i] for i in members], index, config, progress)):
                out[i] = cp
    return [cp for cp in out if cp is not None]


def _shared_pass(
    group: Sequence[PreparedModel], index: DatasetIndex, config: AuditConfig, progress: Progress
) -> list[CleanPass]:
    """One decode of every file, each batch sent to every model of ``group`` (they share one decoder).

    ``CleanPass.seconds`` of each model: its own forward time plus an equal share of the rest of the pass
    (reading, decoding, resizing), so the models' seconds add up to the pass's wall time."""
    samples = index.samples
    n = len(samples)
    m = len(group)
    probs: list[np.ndarray] = [np.zeros((n, pm.adapter.n_outputs), dtype=np.float64) for pm in group]
    feats: list[np.ndarray | None] = [None] * m
    ok = np.zeros(n, dtype=bool)
    failed: list[tuple[str, str]] = []
    all_hashes: dict[int, str] = {}
    forward_s = [0.0] * m
    for pm in group:
        if hasattr(pm.adapter, "reset_output_stats"):
            pm.adapter.reset_output_stats()

    def to_inputs(image: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(pm.prepare([image])[0] for pm in group)  # per image, as clean_pass does

    t0 = time.perf_counter()
    with progress.stage(f"model pass ({m} models, one decode)", n) as bar:
        for batch in iter_batches(
            samples, config.batch_size, workers=config.workers, decoder=group[0].decoder, transform=to_inputs
        ):
            all_hashes.update(batch.hashes)
            failed.extend((samples[f.index].rel, f.error) for f in batch.failed)
            if batch.indices:
                idx = np.asarray(batch.indices)
                for j, pm in enumerate(group):
                    t = time.perf_counter()
                    x = np.stack([inputs[j] for inputs in batch.images])
                    p, f = pm.adapter.forward(x)
                    forward_s[j] += time.perf_counter() - t
                    fj = feats[j]
                    if fj is None:
                        fj = feats[j] = np.zeros((n, f.shape[1]), dtype=np.float32)
                    probs[j][idx], fj[idx] = p, f
                ok[idx] = True
            bar.update(len(batch.indices) + len(batch.failed))
    wall = time.perf_counter() - t0
    if not ok.any():
        raise input_error(
            config.data_path,
            f"holds no readable image: all {n} image files failed to decode (first: {failed[0][0]}: {failed[0][1]})",
        )
    sel = np.flatnonzero(ok)
    shared = max(0.0, wall - sum(forward_s)) / m
    out = []
    for j, pm in enumerate(group):
        y_true = np.array([pm.mapping.data_to_model[samples[i].label] for i in sel], dtype=np.int64)
        fj = feats[j] if feats[j] is not None else np.zeros((n, 0), dtype=np.float32)
        stats = dict(pm.adapter.output_stats) if hasattr(pm.adapter, "output_stats") else {}
        out.append(
            CleanPass(
                sel, y_true, probs[j][sel], fj[sel], tuple(failed), dict(all_hashes), forward_s[j] + shared, stats
            )
        )
    return out


def audit_model(
    config: AuditConfig,
    pm: PreparedModel,
    index: DatasetIndex,
    progress: Progress = QUIET,
    *,
    enabled: Sequence[Any] | None = None,
    registry: Registry | None = None,
    clean: CleanPass | None = None,
) -> AuditReport:
    """The clean pass (``clean`` when it was already made, e.g. by :func:`clean_passes`), then every enabled
    section in order; a section that raises is recorded, not fatal."""
    from .model import environment  # TensorFlow is already loaded by now

    reg = registry or globals()["registry"]()
    enabled = list(
        enabled if enabled is not None else [s for s in reg.sections if config.is_enabled(s.name, s.default_enabled)]
    )
    progress.info(f"auditing {pm.path.name} on {len(index.samples)} image files in {config.data_path}")
    cp = clean if clean is not None else clean_pass(pm, index, config, progress)
    timings: dict[str, float] = {"model_pass": round(cp.seconds, 3)}
    failures: list[Failure] = [Failure(f.name, f.error) for f in reg.failed_plugins if config.is_enabled(f.name)]
    names = pm.mapping.model_classes
    model = model_access(pm, index, cp, config, progress)
    results: dict[str, Any] = {}
    columns: dict[str, np.ndarray] = {}
    tables = {}
    for section in enabled:
        ctx = _context(config, pm, index, cp, model, section.name, progress, results)
        t = time.perf_counter()
        try:
            result = section.run(ctx, config.options(section.name))
        except Exception as exc:
            failures.append(Failure(section.name, describe_exception(exc)))
            result = None
        timings[section.name] = round(time.perf_counter() - t, 3)
        failures.extend(Failure(name, error) for name, error in ctx.failures)
        if result is not None:
            results[section.name] = result
            columns.update(ctx.columns)
            tables.update(ctx.tables)

    samples = index.samples
    skipped = [(s.rel, s.reason) for s in index.skipped] + list(cp.failed)
    fp = fingerprint([(samples[i].rel, samples[i].label, h) for i, h in cp.all_hashes.items() if h])
    counts = {lab: 0 for lab in index.labels}
    for i in cp.sample_idx:
        counts[samples[i].label] += 1
    info = pm.adapter.info
    created = datetime.now(UTC)
    return AuditReport(
        schema_version=SCHEMA_VERSION,
        report_id=f"{created.strftime('%Y%m%dT%H%M%SZ')}-{info.sha256[:8]}",
        tool_version=__version__,
        created_utc=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        model={
            **info.to_dict(),
            "sidecar": pm.sidecar.to_dict() if pm.sidecar else None,
            "features_note": pm.adapter.features_note,
        },
        preprocessing=pm.preprocessing_dict(),
        classes=pm.mapping.to_dict(),
        dataset={
            "path": str(config.data_path),
            "source": index.source,
            "fingerprint": fp,
            "n_images": len(cp.sample_idx),
            "n_skipped": len(skipped),
            "counts": counts,
        },
        environment={"python": platform.python_version(), "platform": platform.platform(), **environment()},
        config=config.to_dict(),
        summary=build_summary(reg, results, failures, pm),
        results=results,
        sections=tuple(s.name for s in reg.sections),
        failures=tuple(failures),
        timings=timings,
        artifacts=Artifacts(
            predictions=predictions_table(samples, cp, names, columns), tables=tables, data_root=str(index.root)
        ),
    )


def model_access(
    pm: PreparedModel, index: DatasetIndex, cp: CleanPass, config: AuditConfig, progress: Progress = QUIET
) -> ModelAccess:
    """The narrow view of the model that sections get."""
    return ModelAccess(
        pm,
        load_images=lambda rows, resize=None: _load_rows(
            index, cp, rows, pm.decoder if resize is None else _decoder_for(resize), config.workers
        ),
        pass_over=lambda idx, **kw: clean_pass(pm, idx, config, progress, **kw),
    )


def run_section(
    name: str,
    config: AuditConfig,
    pm: PreparedModel,
    index: DatasetIndex,
    cp: CleanPass,
    progress: Progress = QUIET,
    **options: Any,
) -> Any:
    """Run one section on a clean pass outside a whole audit (tests, notebooks); ``options`` override the
    configuration's options of that section. Exceptions propagate."""
    section = registry().get(name)
    opts = dataclasses.replace(config.options(name), **options) if options else config.options(name)
    ctx = _context(config, pm, index, cp, model_access(pm, index, cp, config, progress), name, progress, {})
    return section.run(ctx, opts)


def _context(
    config: AuditConfig,
    pm: PreparedModel,
    index: DatasetIndex,
    cp: CleanPass,
    model: ModelAccess,
    name: str,
    progress: Progress,
    results: dict[str, Any],
) -> SectionContext:
    """What section ``name`` may use: the clean pass, the model's narrow view, its set-up plan, earlier results."""
    return SectionContext(
        config=config,
        index=index,
        class_names=pm.mapping.model_classes,
        clean=cp,
        model=model,
        plan=pm.plans.get(name),
        results=dict(results),
        progress=progress,
    )


def _decoder_for(resize: str) -> Any:
    from .model import decoder_for

    return decoder_for(resize)


def _load_rows(
    index: DatasetIndex, cp: CleanPass, rows: Sequence[int], decoder: Any = "cv2", workers: int = 1
) -> list[np.ndarray]:
    """Decoded images of clean-pass rows (they decoded once, so they decode again), with the clean pass's
    decoder."""

    def load(j: int) -> np.ndarray:
        loaded = load_sample(int(j), index.samples[cp.sample_idx[j]], decoder)
        if loaded.image is None:
            raise RuntimeError(f"{index.samples[cp.sample_idx[j]].rel} no longer decodes ({loaded.error})")
        return loaded.image

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(rows)))) as pool:
        return list(pool.map(load, rows))


def build_summary(reg: Registry, results: dict[str, Any], failures: Sequence[Failure], pm: PreparedModel) -> dict:
    """Headline numbers and every warning, in the order a reviewer should read them (by rank, then section)."""
    warnings: list[Warning] = []
    headline: dict[str, Any] = {}
    for section in reg.sections:
        if section.name in results:
            contribution = section.summary(results[section.name])
            headline.update(contribution.headline)
            warnings.extend(contribution.warnings)
    if pm.adapter.info.output_type == "logits":
        warnings.append(
            Warning("The model outputs logits; the audit applied softmax to get probabilities.", RANK_MODEL)
        )
    elif pm.adapter.info.output_type == "logit (binary)":
        warnings.append(
            Warning(
                "The model outputs one logit; the audit applied a sigmoid to get the probability of "
                f"{pm.mapping.model_classes[1]} (and 1 minus it for {pm.mapping.model_classes[0]}).",
                RANK_MODEL,
            )
        )
    if not pm.adapter.info.safe_mode:
        warnings.append(
            Warning(
                "The model was loaded with safe_mode off (--unsafe-deserialization): it can run "
                "arbitrary code; audit only models from sources you trust.",
                RANK_MODEL,
            )
        )
    warnings.extend(Warning(note, RANK_DATA) for note in pm.mapping.notes)
    warnings.extend(
        Warning(f"The {f.analysis.replace('_', ' ')} analysis failed: {f.error}", RANK_FAILURES) for f in failures
    )
    ordered = sorted(enumerate(warnings), key=lambda iw: (iw[1].rank, iw[0]))
    return {"headline": headline, "warnings": [w.text for _, w in ordered], "n_failures": len(failures)}
