"""Benchmark rows of the model comparison: one three-model audit against three single-model audits.

Models: the sample model (96 px) and two untrained ``small_cnn`` models with seeded weights at 64 and 128 px
(timing does not need training); all three use the default resize, so the three-model audit decodes every
file once for all of them. Data: the sample test images (100 PNGs) and, when ``WBC_REAL_DATA`` is set, the
real PBC subset (360x363 JPEGs; ``n`` files as symbolic links, as :mod:`bench.real`), where decoding is a
large share of the clean pass.

Everything runs in this process (TensorFlow imported and one untimed warm-up audit first, so neither side
pays the import): ``singles_s`` is the sum of the wall times of ``run_audit`` on each model alone,
``three_s`` the wall time of ``run_audit`` on the three (the comparison included: pairwise tests and the
speed measurement). Sections: classification, calibration, selective prediction and Fisher (the ones
without extra model passes, so the shared decode is what differs), ``bootstrap = 200``, JSON reports
written. ``reps`` interleaved rounds, medians. Target: ``three_s < singles_s``.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MODEL = ROOT / "model_zoo" / "pretrained" / "wbc5_small_cnn.keras"
SAMPLE_TEST = ROOT / "sample_data" / "wbc5" / "test"
SECTIONS = ("classification", "calibration", "selective_prediction", "fisher")


def _models(out: Path) -> list[Path]:
    from model_zoo.architectures import small_cnn

    paths = [SAMPLE_MODEL]
    for size, seed in ((64, 7), (128, 8)):
        p = out / f"small_cnn_{size}px_untrained.keras"
        small_cnn((size, size), n_classes=5, seed=seed).save(p)
        paths.append(p)
    return paths


def _time_audit(models, data: Path, out: Path) -> float:
    from auditor.config import AuditConfig
    from auditor.history import write_comparison, write_report
    from auditor.pipeline import run_audit

    cfg = AuditConfig(
        model_paths=tuple(models),
        data_path=data,
        out_dir=out,
        formats=("json",),
        n_bootstrap=200,
        enabled=SECTIONS,
        quiet=True,
    )
    t = time.perf_counter()
    run_audit(cfg, write=write_report, write_comparison=write_comparison)
    return time.perf_counter() - t


def measure(models, data: Path, reps: int, tmp: Path, log) -> dict:
    _time_audit(models, data, tmp / "warm")  # TF import, first tracing
    singles: list[float] = []
    three: list[float] = []
    per_model: list[list[float]] = [[] for _ in models]
    for rep in range(reps):
        parts = [_time_audit([m], data, tmp / f"s{rep}") for m in models]
        for i, s in enumerate(parts):
            per_model[i].append(s)
        singles.append(sum(parts))
        three.append(_time_audit(models, data, tmp / f"t{rep}"))
        log(f"  round {rep + 1}: singles {singles[-1]:.2f} s, three-model {three[-1]:.2f} s")
    s, t = statistics.median(singles), statistics.median(three)
    return {
        "singles_s": round(s, 3),
        "three_s": round(t, 3),
        "ratio": round(t / s, 3),
        "per_model_s": [round(statistics.median(x), 3) for x in per_model],
        "rounds_singles_s": [round(x, 3) for x in singles],
        "rounds_three_s": [round(x, 3) for x in three],
    }


def compare_bench(n_real: int, reps: int, log=print) -> dict:
    import os

    from bench.real import build_real_folder, real_data_root

    tmp = Path(tempfile.mkdtemp(prefix="wbc-bench-compare-"))
    try:
        models = _models(tmp)
        out: dict = {"models": [str(m.name) for m in models], "sections": list(SECTIONS), "reps": reps}
        log(f"comparison: three-model audit vs three single audits on the sample data ({SAMPLE_TEST})")
        out["sample"] = {"n_images": 100, **measure(models, SAMPLE_TEST, reps, tmp, log)}
        src = real_data_root()
        if src is None:
            out["real"] = {"skipped": "WBC_REAL_DATA is not set"}
        else:
            folder = tmp / "real"
            info = build_real_folder(src, folder, n_real)
            log(f"comparison: the same on {n_real} real JPEGs ({info['distinct_files']} distinct, {src})")
            out["real"] = {"n_images": n_real, **info, **measure(models, folder, reps, tmp, log)}
        out["cpu_count"] = os.cpu_count()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def table_rows(res: dict | None, add) -> None:
    """The comparison rows of bench.run's table through its ``add(metric, value, unit, target, ok, fmt)``."""
    if res is None:
        return
    for key, title in (("sample", "sample data"), ("real", "real JPEGs (PBC subset)")):
        r = res.get(key)
        if r is None:
            continue
        if "skipped" in r:
            add(f"3-model audit vs 3 single audits, {title}", f"skipped: {r['skipped']}")
            continue
        add(
            f"3 single audits, {title} ({r['n_images']} img): sum of wall times",
            r["singles_s"],
            "s",
            fmt="{:.2f}",
        )
        add(
            f"3-model audit (one decode, comparison included), {title}",
            r["three_s"],
            "s",
            f"ratio {r['ratio']:.2f} (< 1)",
            ok=r["three_s"] < r["singles_s"],
            fmt="{:.2f}",
        )
