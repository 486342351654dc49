"""``run_audit(config)``: orchestration of one audit per model, and nothing else.

data discovery -> model loading and class matching (all input errors raised here, before any
forward pass) -> one clean pass -> pure analyses (each failure recorded, not raised) -> report.
"""

from __future__ import annotations

import platform
import time
import traceback
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np

from . import SCHEMA_VERSION, __version__
from .analyses.calibration import compute_calibration
from .analyses.dataquality import compute_data_quality
from .analyses.fisher import compute_fisher, fisher_scores
from .analyses.metrics import compute_classification_metrics
from .analyses.model_sanity import compute_model_sanity
from .analyses.preprocessing import compute_preprocessing_check
from .analyses.selective import compute_selective
from .analyses.sites import SiteData, compute_sites
from .classes import ClassMapping, match_site_classes, resolve_classes
from .config import DEFAULT_RESIZE, RESIZE_CHOICES, AuditConfig
from .data import DatasetIndex, Skipped, discover, fingerprint, iter_batches, load_sample, stratified_subsample
from .errors import input_error
from .preprocess import SCALINGS, scale_pixels
from .progress import QUIET, Progress
from .report.document import AuditReport, Failure, GalleryItem, SiteDetail, SiteSample
from .sidecar import Sidecar, load_sidecar


@dataclass
class PreparedModel:
    """A loaded model with everything decided about how to feed it."""

    path: Path
    adapter: object  # auditor.model.KerasClassifier
    sidecar: Sidecar | None
    mapping: ClassMapping
    scaling: str
    scaling_source: str
    resize: str
    resize_source: str
    site_classes: dict[str, tuple[dict[str, int], tuple[str, ...]]] = field(default_factory=dict)
    # external site name -> (site label -> model output, labels the model does not know)


@dataclass
class CleanPass:
    """What one pass of the data through the model produced (valid images only, in sample order)."""

    sample_idx: np.ndarray  # (n,) index into DatasetIndex.samples
    y_true: np.ndarray  # (n,) model class index
    probs: np.ndarray  # (n, k)
    features: np.ndarray  # (n, d), d may be 0
    failed: list[tuple[str, str]]  # (rel, reason) for files that did not decode
    all_hashes: dict[int, str]  # sample index -> sha256 for every file read
    seconds: float

    @property
    def hashes(self) -> list[str]:
        """Content sha256 of each valid image, in the order of ``sample_idx``."""
        return [self.all_hashes[i] for i in self.sample_idx]


@dataclass(frozen=True)
class Site:
    """An external data set: its name, discovery result, and where it lives."""

    name: str
    path: Path
    index: DatasetIndex


@dataclass
class SiteRun:
    """One external site's clean pass, with its class matching."""

    site: Site
    index: DatasetIndex  # restricted to the classes the model knows
    clean_pass: CleanPass
    unknown_classes: tuple[str, ...]
    leaks: list[tuple[str, str]]  # (site path, internal path) of byte-identical images


@dataclass
class AuditRun:
    """One model's audit: the report, the clean pass it came from, and per-image columns for the CSV."""

    report: AuditReport
    clean_pass: CleanPass
    columns: dict[str, np.ndarray]
    sites: list[SiteRun]


@dataclass(frozen=True)
class AuditOutcome:
    report: AuditReport
    out_dir: Path | None


def run_audit(config: AuditConfig, *, progress: Progress = QUIET,
              write: Callable | None = None) -> list[AuditOutcome]:
    """Audit every model in ``config`` on its data set; return the reports (written when ``write``).

    ``write(run, prepared, index, config)`` persists one report and returns its folder;
    the CLI passes :func:`auditor.history.write_report`.
    """
    index = discover(config.data_path)
    if not index.samples:
        raise input_error(config.data_path, "holds no image file", expected="images with extension "
                          "jpg, jpeg, png, bmp, tif or tiff inside class folders")
    sites = [discover_site(name, path) for name, path in config.external]
    prepared = [prepare_model(config, path, index) for path in config.model_paths]
    for pm in prepared:  # class matching of every site, before any model time is spent
        for site in sites:
            pm.site_classes[site.name] = match_site_classes(
                pm.mapping.model_classes, labels_with_images=_labels_with_images(site.index),
                site=site.name, path=site.path)
    outcomes = []
    for pm in prepared:
        run = audit_model(config, pm, index, progress, sites=sites)
        out_dir = write(run, pm, index, config) if write else None
        outcomes.append(AuditOutcome(run.report, out_dir))
    return outcomes


def discover_site(name: str, path: Path) -> Site:
    """Index an external site; its errors name the --external option."""
    if not Path(path).is_dir():
        raise input_error(f"--external {name}={path}", "no such directory",
                          expected="a class-per-folder directory")
    index = discover(Path(path))
    if not index.samples:
        raise input_error(f"--external {name}={path}", "holds no image file")
    return Site(name, Path(path), index)


def _labels_with_images(index: DatasetIndex) -> list[str]:
    return [lab for lab, n in index.counts().items() if n > 0]


def prepare_model(config: AuditConfig, path: Path, index: DatasetIndex) -> PreparedModel:
    """Load the model and decide class order, scaling and resize. Raises InputError on any mismatch."""
    from .model import BASE_SCALING, KerasClassifier  # TensorFlow is imported here, not at package import

    sidecar = load_sidecar(path)
    adapter = KerasClassifier(path, unsafe=config.unsafe_deserialization,
                              input_size=sidecar.input_size if sidecar else None)
    if sidecar and sidecar.input_size and tuple(sidecar.input_size) != adapter.input_shape[:2]:
        raise input_error(sidecar.path, f"says input_size {list(sidecar.input_size)} but the model takes "
                          f"{list(adapter.input_shape[:2])}")
    labels_with_images = [lab for lab, n in index.counts().items() if n > 0]
    mapping = resolve_classes(
        adapter.n_outputs, data_labels=index.labels, labels_with_images=labels_with_images,
        sidecar_names=sidecar.class_names if sidecar else None, sidecar_path=sidecar.path if sidecar else None,
        cli_names=config.class_names, data_path=config.data_path)
    if config.preprocess != "auto":
        scaling, scaling_source = config.preprocess, "--preprocess"
    elif sidecar and sidecar.preprocess:
        scaling, scaling_source = sidecar.preprocess, "sidecar"
    elif adapter.info.starts_with_rescaling:
        scaling, scaling_source = "raw", "auto: the model starts with its own Rescaling/Normalization layer"
    elif adapter.info.nested_base in BASE_SCALING:
        scaling = BASE_SCALING[adapter.info.nested_base]
        scaling_source = (f"auto: nested keras.applications base '{adapter.info.nested_base}' expects {scaling} "
                          "preprocessing")
    else:
        scaling, scaling_source = "unit", "auto: default (no sidecar, no rescaling layer in the model)"
    if config.resize:
        resize, resize_source = config.resize, "--resize"
    elif sidecar and sidecar.resize:
        resize, resize_source = sidecar.resize, "sidecar"
    else:
        resize, resize_source = DEFAULT_RESIZE, "default (as keras.utils.image_dataset_from_directory)"
    return PreparedModel(path, adapter, sidecar, mapping, scaling, scaling_source, resize, resize_source)


def clean_pass(pm: PreparedModel, index: DatasetIndex, config: AuditConfig, progress: Progress, *,
               data_to_model: dict[str, int] | None = None, stage: str = "model pass",
               data_path: Path | str | None = None) -> CleanPass:
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
        adapter.reset_output_stats()  # output_stats then describe this pass only (read by the sanity analysis)

    def to_input(image: np.ndarray) -> np.ndarray:
        # per image, in the decode threads: resize + scale overlap the forward pass of the batch before
        # (one image at a time gives the same pixels as a batch: tested bit for bit)
        return adapter.prepare([image], resize=pm.resize, scaling=pm.scaling)[0]

    with progress.stage(stage, n) as bar:
        for batch in iter_batches(samples, config.batch_size, workers=config.workers, transform=to_input):
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
        raise input_error(data_path or config.data_path, f"holds no readable image: all {n} image files failed to decode "
                          f"(first: {failed[0][0]}: {failed[0][1]})")
    sel = np.flatnonzero(ok)
    y_true = np.array([data_to_model[samples[i].label] for i in sel], dtype=np.int64)
    if feats is None:
        feats = np.zeros((n, 0), dtype=np.float32)
    return CleanPass(sel, y_true, probs[sel], feats[sel], failed, all_hashes, seconds)


def run_preprocessing_check(pm: PreparedModel, index: DatasetIndex, cp: CleanPass, config: AuditConfig,
                            progress: Progress):
    """Forward a stratified subsample under every (resize, scaling); analysis is pure arithmetic.

    Works in chunks of ``batch_size`` images, so memory holds one chunk per resize method at a time.
    """
    sub = stratified_subsample(cp.y_true, config.preprocess_check_samples, seed=config.seed)
    chosen = (pm.resize, pm.scaling)
    settings = [(r, s) for r in RESIZE_CHOICES for s in SCALINGS]
    parts: dict[tuple[str, str], list[np.ndarray]] = {key: [] for key in settings}
    with progress.stage("preprocessing check", len(sub)) as bar:
        for start in range(0, len(sub), config.batch_size):
            chunk = sub[start:start + config.batch_size]
            images = [load_sample(int(j), index.samples[cp.sample_idx[j]]).image for j in chunk]
            for r in RESIZE_CHOICES:
                resized = pm.adapter.prepare(images, resize=r, scaling="raw")  # [0, 255] floats
                for s in SCALINGS:
                    if (r, s) == chosen:
                        parts[(r, s)].append(cp.probs[chunk].argmax(axis=1))  # the clean pass has these
                    else:
                        parts[(r, s)].append(pm.adapter.forward(scale_pixels(resized, s))[0].argmax(axis=1))
            bar.update(len(chunk))
    preds = {key: np.concatenate(v) for key, v in parts.items()}
    return compute_preprocessing_check(cp.y_true[sub], preds, chosen=chosen)


def _attempt(name: str, failures: list[Failure], fn: Callable, *args, **kwargs):
    """Run one analysis; a crash becomes a recorded failure (one line) instead of sinking the audit."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:  # noqa: BLE001 - recorded and shown in the report
        last = traceback.extract_tb(exc.__traceback__)[-1]
        failures.append(Failure(name, f"{type(exc).__name__}: {' '.join(str(exc).split())} "
                                      f"(at {Path(last.filename).name}:{last.lineno})"))
        return None


def site_pass(pm: PreparedModel, site: Site, config: AuditConfig, progress: Progress,
              internal_hashes: dict[str, str]) -> SiteRun:
    """One clean pass over an external site's images of classes the model knows."""
    mapping, unknown = pm.site_classes[site.name]
    keep = tuple(s for s in site.index.samples if s.label in mapping)
    left_out = tuple(Skipped(s.rel, f"class '{s.label}' is not one of the model's classes")
                     for s in site.index.samples if s.label not in mapping)
    index = DatasetIndex(site.index.root, site.index.source, keep, site.index.skipped + left_out,
                         tuple(lab for lab in site.index.labels if lab in mapping), site.index.empty_labels)
    cp = clean_pass(pm, index, config, progress, data_to_model=mapping, stage=f"site {site.name}"[:24],
                    data_path=f"--external {site.name}={site.path}")
    leaks = [(index.samples[i].rel, internal_hashes[h]) for i, h in zip(cp.sample_idx, cp.hashes)
             if h in internal_hashes]
    return SiteRun(site, index, cp, unknown, leaks)


def audit_model(config: AuditConfig, pm: PreparedModel, index: DatasetIndex,
                progress: Progress = QUIET, *, sites: list[Site] | tuple = ()) -> AuditRun:
    """Run the clean pass and every analysis for one prepared model (and its external sites)."""
    timings: dict[str, float] = {}
    progress.info(f"auditing {pm.path.name} on {len(index.samples)} image files in {config.data_path}")
    cp = clean_pass(pm, index, config, progress)
    timings["model_pass"] = round(cp.seconds, 3)
    failures: list[Failure] = []
    names = pm.mapping.model_classes
    samples = index.samples
    sanity = _attempt("model_sanity", failures, compute_model_sanity, cp.probs, cp.y_true,
                      n_classes_in_data=len(np.unique(cp.y_true)), output_type=pm.adapter.info.output_type,
                      raw_row_sums=getattr(pm.adapter, "output_stats", None), class_names=names)

    t = time.perf_counter()
    metrics = _attempt("classification", failures, compute_classification_metrics, cp.y_true, cp.probs,
                       class_names=names, n_bootstrap=config.n_bootstrap, seed=config.seed,
                       n_mistakes=config.gallery_size)
    timings["classification"] = round(time.perf_counter() - t, 3)

    features = cp.features if cp.features.shape[1] > 0 else None
    t = time.perf_counter()
    fisher = _attempt("fisher", failures, compute_fisher, cp.y_true, cp.probs, class_names=names,
                      features=features, threshold=config.fisher_threshold, n_top=config.gallery_size)
    calibration = _attempt("calibration", failures, compute_calibration, cp.y_true, cp.probs, seed=config.seed)
    selective = _attempt("selective_prediction", failures, compute_selective, cp.y_true, cp.probs,
                         targets=config.target_accuracies)
    timings["fisher_calibration_selective"] = round(time.perf_counter() - t, 3)
    columns: dict[str, np.ndarray] = {}
    if fisher is not None:
        scores = fisher_scores(cp.y_true, cp.probs, features)
        columns = {"fisher_score": scores.fisher, "expected_fisher_score": scores.expected}
        if scores.grad_norm is not None:
            columns["last_layer_grad_norm"] = scores.grad_norm

    check = None
    if config.preprocess_check_samples > 0:
        t = time.perf_counter()
        check = _attempt("preprocessing_check", failures, run_preprocessing_check, pm, index, cp, config, progress)
        timings["preprocessing_check"] = round(time.perf_counter() - t, 3)

    site_runs: list[SiteRun] = []
    sites_result = None
    site_details: list[SiteDetail] = []
    site_samples: list[SiteSample] = []
    if sites:
        t = time.perf_counter()
        internal_hashes = {h: samples[i].rel for i, h in zip(cp.sample_idx, cp.hashes)}
        site_runs = [site_pass(pm, s, config, progress, internal_hashes) for s in sites]
        timings["site_passes"] = round(time.perf_counter() - t, 3)
        t = time.perf_counter()
        sites_result = _attempt(
            "external_sites", failures, compute_sites,
            SiteData("internal", cp.y_true, cp.probs, cp.features),
            [SiteData(r.site.name, r.clean_pass.y_true, r.clean_pass.probs, r.clean_pass.features) for r in site_runs],
            class_names=names, leaks={r.site.name: len(r.leaks) for r in site_runs},
            n_bootstrap=config.n_bootstrap, seed=config.seed)
        if config.sites_full:
            for r in site_runs:
                rc = r.clean_pass
                f_site = rc.features if rc.features.shape[1] > 0 else None
                site_details.append(SiteDetail(
                    site=r.site.name,
                    fisher=_attempt(f"fisher ({r.site.name})", failures, compute_fisher, rc.y_true, rc.probs,
                                    class_names=names, features=f_site, threshold=config.fisher_threshold,
                                    n_top=0),
                    calibration=_attempt(f"calibration ({r.site.name})", failures, compute_calibration,
                                         rc.y_true, rc.probs, seed=config.seed),
                    selective=_attempt(f"selective_prediction ({r.site.name})", failures, compute_selective,
                                       rc.y_true, rc.probs, targets=config.target_accuracies)))
        timings["site_analyses"] = round(time.perf_counter() - t, 3)
        site_samples = _site_strip([("internal", index, cp)] + [(r.site.name, r.index, r.clean_pass)
                                                                for r in site_runs], names, config.seed)

    skipped = [(s.rel, s.reason) for s in index.skipped] + cp.failed
    skipped.sort()
    used_paths = [samples[i].rel for i in cp.sample_idx]
    used_labels = [samples[i].label for i in cp.sample_idx]
    dq = compute_data_quality(used_paths=used_paths, used_labels=used_labels, used_hashes=cp.hashes,
                              skipped=skipped, labels=index.labels, empty_classes=index.empty_labels)

    pred = cp.probs.argmax(axis=1)

    def gallery(indices) -> tuple[GalleryItem, ...]:
        return tuple(GalleryItem(
            index=int(j), path=used_paths[j], true_label=names[cp.y_true[j]], predicted_label=names[pred[j]],
            confidence=float(cp.probs[j, pred[j]]), true_probability=float(cp.probs[j, cp.y_true[j]]),
        ) for j in indices)

    mistakes = gallery(metrics.most_confident_mistakes) if metrics is not None else ()
    fisher_gallery = gallery(fisher.top_indices) if fisher is not None else ()

    fp = fingerprint([(samples[i].rel, samples[i].label, h) for i, h in cp.all_hashes.items() if h])
    info = pm.adapter.info
    created = datetime.now(timezone.utc)
    report_id = f"{created.strftime('%Y%m%dT%H%M%SZ')}-{info.sha256[:8]}"
    summary = build_summary(metrics, check, dq, failures, pm, calibration, selective, sites_result, site_runs,
                            sanity=sanity)
    from .model import environment  # TensorFlow is already loaded by now
    report = AuditReport(
        schema_version=SCHEMA_VERSION, report_id=report_id, tool_version=__version__,
        created_utc=created.isoformat(timespec="seconds").replace("+00:00", "Z"),
        model={**info.to_dict(), "sidecar": pm.sidecar.to_dict() if pm.sidecar else None,
               "features_note": pm.adapter.features_note},
        preprocessing={"scaling": pm.scaling, "scaling_source": pm.scaling_source,
                       "resize": pm.resize, "resize_source": pm.resize_source},
        classes=pm.mapping.to_dict(),
        dataset={"path": str(config.data_path), "source": index.source, "fingerprint": fp,
                 "n_images": int(len(cp.sample_idx)), "n_skipped": len(skipped),
                 "counts": dict(dq.counts)},
        environment={"python": platform.python_version(), "platform": platform.platform(),
                     **environment()},
        config=config.to_dict(), summary=summary, data_quality=dq, classification=metrics,
        preprocessing_check=check, mistakes=mistakes, fisher=fisher, fisher_gallery=fisher_gallery,
        calibration=calibration, selective=selective, sites=sites_result, site_details=tuple(site_details),
        site_samples=tuple(site_samples), site_info=tuple(_site_info(r) for r in site_runs),
        failures=tuple(failures), timings=timings, model_sanity=sanity,
    )
    return AuditRun(report, cp, columns, site_runs)


def _site_info(r: SiteRun) -> dict:
    """Per-site facts for the report: path, counts, skipped files, leakage, fingerprint."""
    cp, idx = r.clean_pass, r.index
    skipped = sorted([(s.rel, s.reason) for s in idx.skipped] + cp.failed)
    return {
        "name": r.site.name, "path": str(r.site.path), "n_images": int(len(cp.sample_idx)),
        "fingerprint": fingerprint([(idx.samples[i].rel, idx.samples[i].label, h)
                                    for i, h in cp.all_hashes.items() if h]),
        "counts": {lab: int(n) for lab, n in idx.counts().items()},
        "unknown_classes": list(r.unknown_classes),
        "skipped": [{"path": p, "reason": why} for p, why in skipped],
        "leaked": [{"site_path": a, "internal_path": b} for a, b in r.leaks],
    }


def _site_strip(datasets, names, seed: int, per_site: int = 5) -> list[SiteSample]:
    """A few images of each data set, one per class in turn (seeded), for the side-by-side strip."""
    rng = np.random.default_rng(seed)
    out = []
    for site_name, index, cp in datasets:
        by_class: dict[int, list[int]] = {}
        for j, c in enumerate(cp.y_true):
            by_class.setdefault(int(c), []).append(j)
        picks = []
        for c in sorted(by_class):
            picks.append(by_class[c][int(rng.integers(len(by_class[c])))])
        for j in picks[:per_site]:
            out.append(SiteSample(site_name, str(index.root), index.samples[cp.sample_idx[j]].rel,
                                  names[cp.y_true[j]]))
    return out


def build_summary(metrics, check, dq, failures, pm: PreparedModel, calibration=None, selective=None,
                  sites=None, site_runs=(), sanity=None) -> dict:
    """Headline numbers and every warning, in the order a reviewer should read them."""
    warnings: list[str] = list(sanity.warnings) if sanity is not None else []  # a broken model comes first
    if check is not None:
        warnings.extend(check.warnings)
    if pm.adapter.info.output_type == "logits":
        warnings.append("The model outputs logits; the audit applied softmax to get probabilities.")
    if not pm.adapter.info.safe_mode:
        warnings.append("The model was loaded with safe_mode off (--unsafe-deserialization): it can run "
                        "arbitrary code; audit only models from sources you trust.")
    warnings.extend(dq.warnings)
    warnings.extend(pm.mapping.notes)
    for f in failures:
        warnings.append(f"The {f.analysis.replace('_', ' ')} analysis failed: {f.error}")
    headline = {}
    if metrics is not None:
        headline = {
            "accuracy": metrics.accuracy, "accuracy_ci": list(metrics.accuracy_ci),
            "f1_macro": metrics.f1_macro, "f1_macro_ci": list(metrics.f1_macro_ci),
            "balanced_accuracy": metrics.balanced_accuracy,
            "balanced_accuracy_ci": list(metrics.balanced_accuracy_ci),
            "roc_auc_macro": metrics.roc_auc_macro, "top2_accuracy": metrics.top2_accuracy,
            "n_images": metrics.n_samples, "n_classes_evaluated": len(metrics.evaluated_classes),
            "weakest_class": min(({"name": r.name, "recall": r.recall, "support": r.support}
                                  for r in metrics.per_class if r.support > 0), key=lambda c: c["recall"]),
        }
    if calibration is not None:
        headline.update(ece=calibration.ece, brier=calibration.brier, mean_confidence=calibration.mean_confidence)
        if calibration.is_miscalibrated:
            warnings.append(f"{calibration.reading[0]} ECE {calibration.ece:.1%} (noise alone: about "
                            f"{calibration.ece_noise_floor:.1%}): do not read its confidence as the probability of "
                            "being right without recalibration (see Calibration).")
    if selective is not None:
        headline["operating_points"] = [
            {"target_accuracy": p.target_accuracy, "coverage": p.coverage, "threshold": p.threshold,
             "reachable": p.reachable} for p in selective.operating_points]
        headline["aurc"] = selective.aurc
    for r in site_runs:
        if r.leaks:
            warnings.append(f"Leakage: site {r.site.name} shares {len(r.leaks)} byte-identical image(s) with the "
                            f"internal set (e.g. {r.leaks[0][0]} = {r.leaks[0][1]}).")
        if r.unknown_classes:
            warnings.append(f"Site {r.site.name}: class folder(s) {', '.join(r.unknown_classes)} unknown to the "
                            "model were left out.")
    if sites is not None and len(sites.rows) > 1:
        headline["sites"] = [{"name": row.name, "accuracy": row.metrics.accuracy, "accuracy_gap": row.accuracy_gap,
                              "shift_score": row.shift_score} for row in sites.rows[1:]]
        worst = max(sites.rows[1:], key=lambda row: row.accuracy_gap)
        if worst.accuracy_gap > 0.05:
            warnings.append(f"External site {worst.name}: accuracy {worst.metrics.accuracy:.1%}, "
                            f"{worst.accuracy_gap * 100:.1f} points below internal (see External sites).")
    return {"headline": headline, "warnings": warnings, "n_failures": len(failures)}

