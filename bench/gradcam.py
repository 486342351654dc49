"""Benchmark rows of Grad-CAM: 100 images, batched (one gradient tape per batch of 32) against a per-image loop.

Targets (issue 11): 100 images at 96x96 on the sample model in under 3 s; 100 images on a 224-pixel ResNet50
head (``model_zoo`` ``resnet50_head``, ``weights=None``: timing does not need trained weights) in under 60 s.

Data: the first 100 images of the sample data's test split, resized to the model's input (in memory: decoding
is not timed). Timed: :meth:`auditor.model.KerasClassifier.gradcam` (the section's call: forward, gradient,
Grad-CAM weights, upsampling to the input), after one warm-up call that traces the ``tf.function``; the median
of ``reps`` runs. The per-image loop calls the same method with one image at a time (the same traced function;
a batch of one), timed on ``n_loop`` images and scaled to 100; ratio = loop / batched.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MODEL = ROOT / "model_zoo" / "pretrained" / "wbc5_small_cnn.keras"
SAMPLE_DATA = ROOT / "sample_data" / "wbc5" / "test"
TARGETS = {96: 3.0, 224: 60.0}


def measure(model_path: Path, n: int, reps: int, n_loop: int, log) -> dict:
    import numpy as np

    from auditor.data import decode_image
    from auditor.model import KerasClassifier

    clf = KerasClassifier(model_path)
    h = clf.input_shape[0]
    files = sorted(SAMPLE_DATA.glob("*/*.png"))
    files = [files[i % len(files)] for i in range(n)]
    images = [decode_image(f.read_bytes(), str(f)) for f in files]
    x = clf.prepare(images, resize="bilinear", scaling="raw")
    cls = np.arange(n) % clf.n_outputs
    t0 = time.perf_counter()
    clf.gradcam(x[:32], cls[:32])  # traces the tf.function
    first_s = time.perf_counter() - t0
    clf.gradcam(x[:1], cls[:1])
    batched = []
    for _ in range(reps):
        t0 = time.perf_counter()
        maps = clf.gradcam(x, cls)
        batched.append(time.perf_counter() - t0)
    loop = []
    for _ in range(reps):
        t0 = time.perf_counter()
        for i in range(n_loop):
            clf.gradcam(x[i : i + 1], cls[i : i + 1])
        loop.append((time.perf_counter() - t0) * n / n_loop)
    b, lp = statistics.median(batched), statistics.median(loop)
    log(f"  {h}px: batched {b:.2f} s, per-image loop {lp:.2f} s (from {n_loop} images), ratio {lp / b:.1f}")
    return {
        "model": model_path.name,
        "input_px": h,
        "n_images": n,
        "n_loop": n_loop,
        "batched_s": round(b, 3),
        "batched_runs_s": [round(t, 3) for t in batched],
        "loop_s_scaled": round(lp, 3),
        "loop_vs_batched": round(lp / b, 2),
        "first_call_32_s": round(first_s, 3),
        "maps_finite": bool(np.all(np.isfinite(maps))),
    }


def gradcam_bench(n: int = 100, reps: int = 3, log=print) -> dict:
    from model_zoo.architectures import resnet50_head

    out = {"models": []}
    log(f"Grad-CAM: {n} images, sample model (96 px)")
    out["models"].append(measure(SAMPLE_MODEL, n, reps, n, log))
    with tempfile.TemporaryDirectory(prefix="wbc-bench-cam-") as tmp:
        path = Path(tmp) / "resnet50_head_224_untrained.keras"
        resnet50_head((224, 224), n_classes=5, weights=None, seed=7).save(path)
        log(f"Grad-CAM: {n} images, ResNet50 head (224 px, weights=None)")
        out["models"].append(measure(path, n, 1, 10, log))
    return out


def table_rows(r: dict | None, add) -> None:
    """Add the Grad-CAM rows to bench.run's table through its ``add(metric, value, unit, target, ok, fmt)``."""
    if r is None:
        return
    for m in r["models"]:
        px, target = m["input_px"], TARGETS.get(m["input_px"])
        name = "sample model" if px == 96 else "ResNet50 head, weights=None"
        add(
            f"Grad-CAM {m['n_images']} images, {name} ({px} px), batched",
            m["batched_s"],
            "s",
            f"< {target:g} s" if target else "",
            m["batched_s"] < target if target else None,
            "{:.2f}",
        )
        add(
            f"  per-image loop (from {m['n_loop']} images, scaled) / batched",
            m["loop_vs_batched"],
            "x",
            f"loop {m['loop_s_scaled']:.2f} s",
            None,
            "{:.1f}",
        )
