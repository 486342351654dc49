"""Benchmark rows of the perturbation-severity grid: is perturbing hidden behind inference?

Target (issue 9): grid throughput, images per second through the model with perturbing included, at least
0.85 of bare ``model.predict(x, batch_size=32)`` on arrays already perturbed, of the same count and size.

Data: ``n`` images (default 200) of the sample data's test split, cropped and resized to the model's input
by the audit's own settings (in memory: decoding is not part of either side). Full grid: every perturbation
at every severity (13 x 5 = 65 cells, ``n`` images each, so 65 ``n`` forward passes per side).

Per model, ``reps`` interleaved rounds, medians reported:

* ``predict_s``: bare ``model.predict(x, batch_size=32)`` summed over the grid's cells, one call per
  perturbation (its severities' images together), on arrays perturbed and scaled beforehand (untimed).
* ``grid_s``: :func:`auditor.sections.perturbation_grid.perturbed_forward`, the section's own loop
  (perturbing in ``workers`` threads, a bounded number of batches ahead, the adapter's forward on the
  batch before), over the same cells and images.
* ``forward_s``: the adapter's forward (the ``tf.function`` the grid calls) on the same pre-perturbed arrays
  in batches of 32, for the record: the stricter floor (``model.predict`` adds per-call overhead).
* ``perturb_1thread_s``: perturbing alone (``perturb_batch`` + scaling), one thread, for the record.

Models: the sample model (96 px) and an untrained 128-px ``small_cnn`` of ``model_zoo.architectures``
with seeded weights (timing does not need training).
"""

from __future__ import annotations

import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MODEL = ROOT / "model_zoo" / "pretrained" / "wbc5_small_cnn.keras"
SAMPLE_DATA = ROOT / "sample_data" / "wbc5" / "test"
GRID_TARGET = 0.85


def make_128px_model(out_dir: Path) -> Path:
    from model_zoo.architectures import small_cnn

    path = out_dir / "small_cnn_128px_untrained.keras"
    small_cnn((128, 128), n_classes=5, seed=7).save(path)
    return path


def measure_grid(model_path: Path, data: Path, n: int, reps: int, log) -> dict:
    import numpy as np

    from auditor.config import AuditConfig
    from auditor.data import discover, load_sample
    from auditor.perturb import NAMES, SEVERITIES, image_key, perturb_batch
    from auditor.sections.perturbation_grid import _to_model, perturbed_forward

    config = AuditConfig(model_paths=(model_path,), data_path=data)
    from auditor.pipeline import prepare_model

    index = discover(data)
    pm = prepare_model(config, model_path, index)
    adapter, model = pm.adapter, pm.adapter.model
    h, w, c_in = adapter.input_shape
    settings = {"resize": pm.resize, "scaling": pm.scaling, "crop": pm.crop, "channels": pm.channels}
    samples = [index.samples[i % len(index.samples)] for i in range(n)]
    images = [load_sample(i, s, pm.decoder).image for i, s in enumerate(samples)]
    raw = np.concatenate(
        [pm.prepare(images[i : i + 32], channels="rgb", scaling="raw") for i in range(0, n, 32)]
    ).astype(np.float32)
    if c_in != 3:
        raise RuntimeError("the grid bench takes RGB models only")
    unit = raw / np.float32(255.0)
    keys = [image_key(im) for im in raw]
    cells = [(p, s) for p in NAMES for s in SEVERITIES]
    bs, workers = config.batch_size, config.workers

    def to_model(x):
        return _to_model(x, settings, c_in)

    # warm-up: trace the adapter's tf.function and model.predict
    adapter.forward(to_model(raw[:bs]))
    model.predict(to_model(raw[:bs]), batch_size=32, verbose=0)

    def t_predict() -> tuple[float, float]:
        total = forward = 0.0
        for p in NAMES:
            x = np.concatenate(
                [to_model(perturb_batch(unit, p, s, keys=keys, seed=0) * np.float32(255.0)) for s in SEVERITIES]
            )
            t = time.perf_counter()
            model.predict(x, batch_size=32, verbose=0)
            total += time.perf_counter() - t
            t = time.perf_counter()
            for lo in range(0, len(x), bs):
                adapter.forward(x[lo : lo + bs])
            forward += time.perf_counter() - t
        return total, forward

    def t_grid() -> float:
        t = time.perf_counter()
        count = 0
        with ThreadPoolExecutor(workers) as pool:
            for _, lo, hi, _ in perturbed_forward(
                pool,
                unit,
                keys,
                cells,
                seed=0,
                batch=bs,
                ahead=2 * workers,
                to_model=to_model,
                forward=adapter.forward,
            ):
                count += hi - lo
        assert count == n * len(cells)
        return time.perf_counter() - t

    def t_perturb() -> float:
        t = time.perf_counter()
        for p, s in cells:
            for lo in range(0, n, bs):
                to_model(perturb_batch(unit[lo : lo + bs], p, s, keys=keys[lo : lo + bs], seed=0) * np.float32(255.0))
        return time.perf_counter() - t

    runs: dict[str, list[float]] = {"predict_s": [], "forward_s": [], "grid_s": [], "perturb_1thread_s": []}
    for r in range(reps):
        runs["grid_s"].append(t_grid())
        predict_s, forward_s = t_predict()
        runs["predict_s"].append(predict_s)
        runs["forward_s"].append(forward_s)
        runs["perturb_1thread_s"].append(t_perturb())
        log(
            f"  round {r + 1}/{reps}: grid {runs['grid_s'][-1]:.2f} s, bare predict {predict_s:.2f} s, "
            f"adapter forward {forward_s:.2f} s, perturbing alone (1 thread) {runs['perturb_1thread_s'][-1]:.2f} s"
        )
    med = {k: round(statistics.median(v), 4) for k, v in runs.items()}
    passes = n * len(cells)
    return {
        "model": str(model_path.relative_to(ROOT)) if model_path.is_relative_to(ROOT) else model_path.name,
        "input_shape": [h, w, c_in],
        "n_images": n,
        "cells": len(cells),
        "forward_passes": passes,
        "batch_size": bs,
        "workers": workers,
        "runs_s": {k: [round(v, 4) for v in vs] for k, vs in runs.items()},
        "median_s": med,
        "grid_ips": round(passes / med["grid_s"], 1),
        "predict_ips": round(passes / med["predict_s"], 1),
        "perturb_ms_per_image": round(1000 * med["perturb_1thread_s"] / passes, 3),
        "predict_ms_per_image": round(1000 * med["predict_s"] / passes, 3),
        "grid_vs_predict": round(med["predict_s"] / med["grid_s"], 3),
        "grid_vs_predict_per_round": [round(p / g, 3) for p, g in zip(runs["predict_s"], runs["grid_s"])],
        "forward_ips": round(passes / med["forward_s"], 1),
        "grid_vs_forward": round(med["forward_s"] / med["grid_s"], 3),
    }


def grid_bench(n: int = 200, reps: int = 3, log=print) -> dict:
    """The sample model and a 128-px zoo model; returns the bench.json section."""
    out: dict = {
        "data": str(SAMPLE_DATA.relative_to(ROOT)),
        "definition": {
            "grid_vs_predict": "predict_s / grid_s (full grid, the same images and cells)",
            "target": f"grid_vs_predict >= {GRID_TARGET}",
        },
        "models": [],
    }
    with tempfile.TemporaryDirectory(prefix="wbc-bench-grid-") as tmp_name:
        for m in (SAMPLE_MODEL, make_128px_model(Path(tmp_name))):
            log(f"perturbation grid: {m.name}, {n} images x 65 cells ({reps} rounds)")
            out["models"].append(measure_grid(m, SAMPLE_DATA, n, reps, log))
    return out


def table_rows(grid: dict | None, add) -> None:
    """Add the grid rows to bench.run's table through its ``add(metric, value, unit, target, ok, fmt)``."""
    if grid is None:
        return
    for m in grid["models"]:
        h = m["input_shape"][0]
        med = m["median_s"]
        tag = f"perturbation grid {h}px ({m['n_images']} img x {m['cells']} cells)"
        add(f"{tag}: grid loop", m["grid_ips"], "img/s", f"{med['grid_s']:.2f} s")
        add("  bare model.predict on pre-perturbed arrays", m["predict_ips"], "img/s", f"{med['predict_s']:.2f} s")
        add(
            f"  perturbing alone, 1 thread: {m['perturb_ms_per_image']:.3f} ms/img "
            f"(predict {m['predict_ms_per_image']:.3f} ms/img)",
            med["perturb_1thread_s"],
            "s",
        )
        add(
            "  adapter forward on pre-perturbed arrays (stricter floor)",
            m["forward_ips"],
            "img/s",
            f"grid/forward {m['grid_vs_forward']:.2f}",
        )
        ratio = m["grid_vs_predict"]
        add("  grid / bare predict (median times)", ratio, "", f">= {GRID_TARGET}", ratio >= GRID_TARGET, "{:.2f}")
