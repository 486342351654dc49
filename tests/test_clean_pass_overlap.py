"""The faster clean pass gives the same pixels and the same probabilities as the plain one.

The clean pass now resizes and scales each image in the decode threads (one image per
``adapter.prepare`` call) and converts BGR to RGB in place; these tests hold it to the batched,
main-thread path bit for bit.
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from auditor.data import Sample, decode_image, iter_batches, to_rgb8


def test_in_place_bgr_to_rgb_is_the_channel_reversal():
    rng = np.random.default_rng(0)
    bgr = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    ref = bgr[..., ::-1].copy()
    out = to_rgb8(bgr.copy())
    assert np.array_equal(out, ref)
    ro = bgr.copy()
    ro.flags.writeable = False  # not ours to overwrite: converted into a new array
    assert np.array_equal(to_rgb8(ro), ref) and np.array_equal(ro, bgr)
    _, png = cv2.imencode(".png", bgr)
    assert np.array_equal(decode_image(png.tobytes(), "x.png"), ref)


def test_iter_batches_applies_the_transform_in_order_and_keeps_failures(tmp_path):
    rng = np.random.default_rng(1)
    samples = []
    for i in range(7):
        p = tmp_path / f"{i}.png"
        if i == 3:
            p.write_bytes(b"not an image")
        else:
            cv2.imwrite(str(p), rng.integers(0, 256, (10 + i, 12, 3), dtype=np.uint8))
        samples.append(Sample(p, p.name, "a"))
    batches = list(iter_batches(samples, 2, workers=2, transform=lambda im: np.float32(im.shape[0])))
    got = [(i, float(v)) for b in batches for i, v in zip(b.indices, b.images)]
    assert got == [(i, 10.0 + i) for i in range(7) if i != 3]
    assert [f.index for b in batches for f in b.failed] == [3]
    assert sorted(i for b in batches for i in b.hashes) == list(range(7))


keras = pytest.importorskip("keras")

from auditor.model import KerasClassifier
from tests.conftest import colour_model, write_colour_folder


@pytest.fixture(scope="module")
def clf(tmp_path_factory):
    path = tmp_path_factory.mktemp("overlap") / "m.keras"
    colour_model().save(path)
    return KerasClassifier(path)


@pytest.mark.parametrize("resize", ["bilinear", "area", "nearest", "bicubic", "lanczos"])
@pytest.mark.parametrize("scaling", ["raw", "unit", "symmetric", "caffe"])
def test_one_image_at_a_time_equals_the_batch_bit_for_bit(clf, resize, scaling):
    rng = np.random.default_rng(2)
    images = [rng.integers(0, 256, s, dtype=np.uint8) for s in [(37, 53, 3), (37, 53, 3), (16, 16, 3), (61, 29, 3)]]
    batch = clf.prepare(images, resize=resize, scaling=scaling)
    single = np.stack([clf.prepare([im], resize=resize, scaling=scaling)[0] for im in images])
    assert single.dtype == batch.dtype == np.float32
    assert np.array_equal(single, batch)


def test_clean_pass_equals_the_batched_main_thread_path(tmp_path, clf):
    from auditor.config import AuditConfig
    from auditor.data import discover, load_sample
    from auditor.pipeline import clean_pass, prepare_model
    from auditor.progress import QUIET

    data = write_colour_folder(tmp_path / "d", n_per_class=9, size=(45, 31), seed=5, fmt="jpg", jitter=60)
    (data / "red" / "broken.jpg").write_bytes(b"\xff\xd8\xff garbage")
    cfg = AuditConfig(model_paths=(clf.path,), data_path=data, batch_size=4)
    index = discover(data)
    pm = prepare_model(cfg, clf.path, index)
    cp = clean_pass(pm, index, cfg, QUIET)
    good = [i for i, s in enumerate(index.samples) if load_sample(i, s).image is not None]
    assert list(cp.sample_idx) == good and len(good) == 27
    # reference: decode on this thread with the model's decoder (for the default resize, TensorFlow's JPEG
    # decoder, as Keras's folder loader), prepare in batches of 4 on this thread, forward
    imgs = [load_sample(i, index.samples[i], pm.decoder).image for i in good]
    ref = np.concatenate(
        [
            pm.adapter.forward(pm.adapter.prepare(imgs[j : j + 4], resize=pm.resize, scaling=pm.scaling))[0]
            for j in range(0, len(imgs), 4)
        ]
    )
    assert np.array_equal(cp.probs, ref)
    assert list(cp.failed) == [("red/broken.jpg", "truncated JPEG (no end-of-image marker)")]
    # the adapter's raw-output statistics describe the last clean pass only
    clean_pass(pm, index, cfg, QUIET)
    stats = pm.adapter.output_stats
    assert stats["n_rows"] == 27 and stats["rows_off"] == 0
    assert abs(stats["min_row_sum"] - 1) < 1e-5 and abs(stats["max_row_sum"] - 1) < 1e-5
