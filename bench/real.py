"""Benchmark rows on real JPEGs: the PBC subset named by ``WBC_REAL_DATA`` (``.../pbc5``).

On the generated 96-px PNGs of :mod:`bench.run` decoding is nearly free; on the real 360x363 JPEGs
it is not, and the clean pass is only as fast as decoding and inference can be overlapped.

Data: every ``train/`` and ``test/`` JPEG of the subset, repeated in sorted order until
there are exactly ``n`` (default 1,000) files (hidden files such as .DS_* left out: 802 distinct), as
symbolic links in a temporary class-per-folder tree
(repeats get a ``rN_`` name prefix; nothing is copied).

Models: the sample model (96 px, ``model_zoo/pretrained/wbc5_small_cnn.keras``) and a 64-px CNN trained
here (seeded, 15 epochs, about 30 s) on the subset's ``train/`` through Keras's folder loader: the
preprocessing check's cost depends on how well the model tells settings apart, so it needs a model that
learned something from real cells (an untrained one is near chance under every setting).

Measured per model, ``reps`` interleaved rounds, medians reported (wall seconds for the ``n`` files):

* ``clean_pass``: :func:`auditor.pipeline.clean_pass` over the files on disk (warm: traced before).
* ``predict_2core``: bare ``model.predict(x, batch_size=32)`` on the pre-decoded, resized, scaled
  array, both cores (the floor the old benchmark compares against).
* ``decode_1core``: read + sha256 + decode + RGB of every file (``auditor.data.load_sample``), one
  thread, the whole process pinned to one CPU.
* ``resize_1core``: ``adapter.prepare`` (resize + scale) of the decoded images in batches of 32,
  the process pinned to one CPU.
* ``predict_1core``: the same ``model.predict`` as above with the process pinned to one CPU.
* ``serial_1core = decode_1core + resize_1core + predict_1core``: nothing overlapped, one core.
* ``overlap_bound = max(decode_1core + resize_1core, predict_1core)``: the ideal two-core pipeline
  in which one core does nothing but decode+resize and the other nothing but predict, each at its
  one-core speed. The target: ``clean_pass <= overlap_bound / 0.8``, i.e. clean-pass throughput at
  least 0.8 of ``n / overlap_bound``. (The clean pass may beat the bound: when one stage waits, the
  other may use both cores.)
* ``preprocessing_check``: the ``preprocessing_check`` section via :func:`auditor.pipeline.run_section`
  (default 250 images) as run by an audit, as a share of the clean pass.
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_MODEL = ROOT / "model_zoo" / "pretrained" / "wbc5_small_cnn.keras"
OVERLAP_TARGET = 0.8


def real_data_root() -> Path | None:
    value = os.environ.get("WBC_REAL_DATA")
    if not value or not Path(value).is_dir():
        return None
    return Path(value)


def build_real_folder(src: Path, dst: Path, n: int) -> dict:
    """Symlink the subset's train+test JPEGs (sorted) into ``dst/<class>/``, repeating up to ``n`` files."""
    files = sorted(
        p
        for split in ("train", "test")
        for p in (src / split).glob("*/*")
        if p.suffix.lower() in (".jpg", ".jpeg", ".png") and not p.name.startswith(".")
    )
    if not files:
        raise RuntimeError(f"no images under {src}/train or {src}/test")
    for i in range(n):
        f = files[i % len(files)]
        rep = i // len(files)
        d = dst / f.parent.name
        d.mkdir(parents=True, exist_ok=True)
        os.symlink(f, d / (f"r{rep}_{f.parent.parent.name}_{f.name}" if rep else f"{f.parent.parent.name}_{f.name}"))
    return {"distinct_files": len(files), "n": n, "repeated": max(0, n - len(files))}


@contextmanager
def one_cpu():
    """Pin every thread of this process (TensorFlow's pools included) to one CPU, then restore."""
    mask = os.sched_getaffinity(0)
    cpu = min(mask)
    _set_all_threads({cpu})
    try:
        yield cpu
    finally:
        _set_all_threads(mask)  # threads started while pinned are released too


def _set_all_threads(cpus) -> None:
    for t in os.listdir("/proc/self/task"):
        try:
            os.sched_setaffinity(int(t), cpus)
        except OSError:
            pass


def make_64px_model(out_dir: Path, train_dir: Path) -> Path:
    import keras

    path = out_dir / "cnn_64px_pbc.keras"
    keras.utils.set_random_seed(0)
    ds = keras.utils.image_dataset_from_directory(train_dir, image_size=(64, 64), batch_size=32, seed=0, verbose=False)
    layers = keras.layers
    model = keras.Sequential(
        [keras.Input((64, 64, 3)), layers.Rescaling(1 / 255.0)]
        + [
            layer
            for filters in (32, 64, 64)
            for layer in (layers.Conv2D(filters, 3, activation="relu", padding="same"), layers.MaxPooling2D())
        ]
        + [layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(5, activation="softmax")]
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(ds, epochs=15, verbose=0)
    model.save(path)
    return path


def _median(xs):
    return round(statistics.median(xs), 4)


def measure_model(model_path: Path, data: Path, reps: int, log) -> dict:
    import numpy as np

    from auditor.config import AuditConfig
    from auditor.data import discover, load_sample
    from auditor.pipeline import clean_pass, prepare_model, run_section
    from auditor.progress import QUIET

    config = AuditConfig(model_paths=(model_path,), data_path=data)
    index = discover(data)
    n = len(index.samples)
    pm = prepare_model(config, model_path, index)
    adapter, model = pm.adapter, pm.adapter.model
    bs = config.batch_size
    res: dict = {
        "model": str(model_path.relative_to(ROOT)) if model_path.is_relative_to(ROOT) else model_path.name,
        "input_shape": list(adapter.input_shape),
        "resize": pm.resize,
        "scaling": pm.scaling,
        "n_images": n,
        "batch_size": bs,
        "workers": config.workers,
    }
    # warm-up: trace the tf.function and model.predict once
    tiny = type(index)(index.root, index.source, index.samples[:64], (), index.labels, ())
    clean_pass(pm, tiny, config, QUIET)
    images = [load_sample(i, s).image for i, s in enumerate(index.samples)]
    x = np.concatenate(
        [adapter.prepare(images[i : i + bs], resize=pm.resize, scaling=pm.scaling) for i in range(0, n, bs)]
    )
    model.predict(x[:64], batch_size=32, verbose=0)

    def t_clean():
        cp = clean_pass(pm, index, config, QUIET)
        assert len(cp.sample_idx) == n
        return cp.seconds, cp

    def t_predict():
        t = time.perf_counter()
        model.predict(x, batch_size=32, verbose=0)
        return time.perf_counter() - t

    def t_decode():
        t = time.perf_counter()
        for i, s in enumerate(index.samples):
            load_sample(i, s)
        return time.perf_counter() - t

    def t_resize():
        t = time.perf_counter()
        for i in range(0, n, bs):
            adapter.prepare(images[i : i + bs], resize=pm.resize, scaling=pm.scaling)
        return time.perf_counter() - t

    runs: dict[str, list[float]] = {
        k: []
        for k in ("clean_pass", "predict_2core", "decode_1core", "resize_1core", "predict_1core", "preprocessing_check")
    }
    for r in range(reps):
        s, cp = t_clean()
        runs["clean_pass"].append(s)
        runs["predict_2core"].append(t_predict())
        with one_cpu():
            runs["decode_1core"].append(t_decode())
            runs["resize_1core"].append(t_resize())
            runs["predict_1core"].append(t_predict())
        t = time.perf_counter()
        run_section("preprocessing_check", config, pm, index, cp)
        runs["preprocessing_check"].append(time.perf_counter() - t)
        log(
            f"  round {r + 1}/{reps}: clean pass {s:.2f} s, predict {runs['predict_2core'][-1]:.2f} s, "
            f"1 core: decode {runs['decode_1core'][-1]:.2f} + resize {runs['resize_1core'][-1]:.2f} + "
            f"predict {runs['predict_1core'][-1]:.2f} s; check {runs['preprocessing_check'][-1]:.2f} s"
        )
    med = {k: _median(v) for k, v in runs.items()}
    serial = med["decode_1core"] + med["resize_1core"] + med["predict_1core"]
    bound = max(med["decode_1core"] + med["resize_1core"], med["predict_1core"])
    # per round ratios too, so load bursts show
    per_round_bound = [
        max(d + z, p) for d, z, p in zip(runs["decode_1core"], runs["resize_1core"], runs["predict_1core"])
    ]
    res.update(
        {
            "runs_s": {k: [round(v, 4) for v in vs] for k, vs in runs.items()},
            "median_s": med,
            "clean_pass_ips": round(n / med["clean_pass"], 1),
            "predict_2core_ips": round(n / med["predict_2core"], 1),
            "serial_1core_s": round(serial, 4),
            "serial_1core_ips": round(n / serial, 1),
            "overlap_bound_s": round(bound, 4),
            "overlap_bound_ips": round(n / bound, 1),
            "clean_vs_predict": round(med["predict_2core"] / med["clean_pass"], 3),
            "clean_vs_serial": round(serial / med["clean_pass"], 3),
            "clean_vs_overlap_bound": round(bound / med["clean_pass"], 3),
            "clean_vs_overlap_bound_per_round": [round(b / c, 3) for b, c in zip(per_round_bound, runs["clean_pass"])],
            "check_share_of_clean_pass": round(med["preprocessing_check"] / med["clean_pass"], 3),
            "preprocess_check_samples": config.options("preprocessing_check").samples,
        }
    )
    return res


def real_bench(n: int = 1000, reps: int = 3, log=print) -> dict:
    """Both models on ``n`` real files; returns the bench.json section (``skipped`` when no data)."""
    src = real_data_root()
    if src is None:
        return {"skipped": "WBC_REAL_DATA not set"}
    out: dict = {
        "data": str(src),
        "loadavg_start": _loadavg(),
        "definition": {
            "overlap_bound_s": "max(decode_1core + resize_1core, predict_1core)",
            "target": f"clean_pass_ips >= {OVERLAP_TARGET} * n / overlap_bound_s",
        },
    }
    with tempfile.TemporaryDirectory(prefix="wbc-bench-real-") as tmp_name:
        tmp = Path(tmp_name)
        out["folder"] = build_real_folder(src, tmp / "data", n)
        models = [SAMPLE_MODEL, make_64px_model(tmp, src / "train")]
        out["models"] = []
        for m in models:
            log(f"real JPEGs: {m.name} on {n} files ({reps} rounds)")
            out["models"].append(measure_model(m, tmp / "data", reps, log))
    out["loadavg_end"] = _loadavg()
    return out


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except OSError:
        return None


def table_rows(real: dict | None, add) -> None:
    """Add the real-data rows to bench.run's table through its ``add(metric, value, unit, target, ok, fmt)``."""
    if real is None:
        return
    if "skipped" in real:
        add("real JPEGs (PBC subset)", f"skipped: {real['skipped']}")
        return
    f = real["folder"]
    for m in real["models"]:
        h = m["input_shape"][0]
        tag = f"real {h}px ({m['n_images']} img, {f['distinct_files']} distinct)"
        med = m["median_s"]
        add(f"{tag}: clean pass", m["clean_pass_ips"], "img/s", f"{med['clean_pass']:.2f} s")
        add(
            "  bare model.predict, pre-decoded, 2 cores",
            m["predict_2core_ips"],
            "img/s",
            f"clean/predict {m['clean_vs_predict']:.2f}",
        )
        add(
            f"  1 core: decode {med['decode_1core']:.2f} + resize {med['resize_1core']:.2f} + "
            f"predict {med['predict_1core']:.2f} s (serial)",
            m["serial_1core_ips"],
            "img/s",
            f"clean/serial {m['clean_vs_serial']:.2f}",
        )
        add("  overlap bound max(decode+resize, predict), 1 core each", m["overlap_bound_ips"], "img/s")
        ratio = m["clean_vs_overlap_bound"]
        add(
            "  clean pass / overlap bound (median times)",
            ratio,
            "",
            f">= {OVERLAP_TARGET}",
            ratio >= OVERLAP_TARGET,
            "{:.2f}",
        )
        add(
            "  preprocessing check / clean pass",
            m["check_share_of_clean_pass"],
            "",
            f"{med['preprocessing_check']:.2f} s for {m['preprocess_check_samples']} img",
            None,
            "{:.2f}",
        )
