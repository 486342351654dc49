"""Grad-CAM: maps on known evidence, batched vs a plain per-image reference, every model shape (in memory and
reloaded), bad layer paths, models without convolutions, focus score, segmentation, sanity check."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from conftest import SAMPLE_MODEL, SAMPLE_TEST

from auditor.analyses.gradcam import CamNotApplicable, focus_score, peak_quadrant, spearman
from auditor.cellmask import cell_mask
from auditor.errors import InputError
from auditor.model import KerasClassifier, _CamRunner

L = keras.layers


def _runner(model, layer=None):
    return _CamRunner(model, layer, binary=False, output_type=None, source="layer")


# ------------------------------------------------------------------------ evidence known by construction


def _blob_model(size=32):
    """Class 1 = 'a bright blob somewhere', built by hand: filter 0 fires on bright 3x3 patches, filter 1 on
    the dark background; the class-1 score reads only filter 0, so Grad-CAM of class 1 must peak at the
    blob (a plain sum of activations would peak on the background)."""
    inp = keras.Input((size, size, 1))
    conv = L.Conv2D(2, 3, padding="same", activation="relu", name="conv")
    x = conv(inp)
    x = L.GlobalAveragePooling2D()(x)
    dense = L.Dense(2, activation="softmax", name="out")
    model = keras.Model(inp, dense(x))
    k = np.zeros((3, 3, 1, 2), np.float32)
    k[..., 0, 0] = 1 / 9
    k[..., 0, 1] = -1 / 9
    conv.set_weights([k, np.array([-0.5, 1.0], np.float32)])
    dense.set_weights([np.array([[0.0, 20.0], [1.0, 0.0]], np.float32), np.zeros(2, np.float32)])
    return model


def _blob_images(n, size=32, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 0.3, (n, size, size, 1)).astype(np.float32)
    quad = rng.integers(0, 4, n)
    for i, q in enumerate(quad):
        r0 = (q // 2) * size // 2 + rng.integers(2, size // 2 - 7)
        c0 = (q % 2) * size // 2 + rng.integers(2, size // 2 - 7)
        x[i, r0 : r0 + 5, c0 : c0 + 5] = 1.0
    return x, quad


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_map_peak_lies_on_the_evidence(method):
    model = _blob_model()
    x, quad = _blob_images(100)
    maps = _runner(model).maps(x, np.ones(100, int), method)
    hits = np.mean([peak_quadrant(m) == q for m, q in zip(maps, quad, strict=True)])
    assert hits >= 0.9
    # the plain activation energy (no gradient weighting) peaks on the background instead
    acts = keras.Model(model.inputs, model.get_layer("conv").output)(x).numpy().sum(-1)
    assert np.mean([peak_quadrant(a) == q for a, q in zip(acts, quad, strict=True)]) < 0.6


# ------------------------------------------------------------------------ batched vs a plain reference


def _sample_images(n=12):
    files = sorted(SAMPLE_TEST.glob("*/*.png"))[::8][:n]
    return np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files]).astype(np.float32)


def _reference_cam(model, x1, cls, method):
    """One image, written out plainly: a two-output model, a tape, the Dense's linear part, numpy weights."""
    head = model.get_layer("probabilities")
    sub = keras.Model(model.inputs, [model.get_layer("pool4").output, head.input])
    xt = tf.convert_to_tensor(x1[None])
    with tf.GradientTape() as tape:
        a, h = sub(xt, training=False)
        z = tf.matmul(h, head.kernel) + head.bias
        s = z[0, cls]
    g = tape.gradient(s, a).numpy()[0].astype(np.float64)
    a = a.numpy()[0].astype(np.float64)
    if method == "gradcam":
        w = g.mean(axis=(0, 1))
    else:
        num = g**2
        den = 2 * g**2 + a.sum(axis=(0, 1)) * g**3
        alpha = np.where(den != 0, num / np.where(den != 0, den, 1), 0)
        w = (alpha * np.maximum(g, 0)).sum(axis=(0, 1))
    cam = np.maximum((a * w).sum(-1), 0).astype(np.float32)
    cam = np.maximum(cv2.resize(cam, (x1.shape[1], x1.shape[0]), interpolation=cv2.INTER_LINEAR), 0)
    return cam / cam.max() if cam.max() > 0 else cam


@pytest.mark.parametrize("method", ["gradcam", "gradcam++"])
def test_batched_matches_single_image_reference(method):
    clf = KerasClassifier(SAMPLE_MODEL)
    x = _sample_images()
    cls = clf.forward(x)[0].argmax(1)
    maps = clf.gradcam(x, cls, method=method, batch_size=5)
    ref = np.stack([_reference_cam(clf.model, x[i], cls[i], method) for i in range(len(x))])
    assert maps.shape == (len(x), 96, 96)
    assert ref.max() > 0
    assert np.abs(maps - ref).max() < 1e-5
    assert clf.cam_target().layer == "pool4"


# ------------------------------------------------------------------------ model shapes


def _mobilenet(size):
    return keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(size, size, 3), alpha=0.35, name="mobilenetv2"
    )


def _shapes(size=48):
    out = {}
    out["sequential"] = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            L.Conv2D(4, 3, activation="relu"),
            L.GlobalAveragePooling2D(),
            L.Dense(3, activation="softmax"),
        ]
    )
    inp = keras.Input((size, size, 3))
    x = L.Rescaling(1 / 255.0)(inp)
    x = L.Normalization(mean=[0.5, 0.5, 0.5], variance=[0.1, 0.1, 0.1])(x)
    x = L.Conv2D(4, 3, activation="relu", name="c1")(x)
    x = L.MaxPooling2D()(x)
    x = L.Conv2D(6, 3, activation="relu", name="c2")(x)
    out["functional_rescaling_normalization"] = keras.Model(inp, L.Dense(3, activation="softmax")(L.Flatten()(x)))
    inp = keras.Input((size, size, 3))
    x = L.GlobalAveragePooling2D()(L.Conv2D(4, 3, name="c")(inp))
    out["functional_logits"] = keras.Model(inp, L.Dense(3, name="logits")(x))
    out["functional_softmax_layer"] = keras.Model(inp, L.Softmax()(L.Dense(3)(x)))
    out["sequential_nested_base"] = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            L.Rescaling(1 / 127.5, offset=-1),
            _mobilenet(size),
            L.GlobalAveragePooling2D(),
            L.Dense(3, activation="softmax"),
        ]
    )
    inp = keras.Input((size, size, 3))
    x = _mobilenet(size)(L.Rescaling(1 / 127.5, offset=-1)(inp))
    x = L.Dense(16, activation="relu")(L.GlobalAveragePooling2D()(x))
    out["functional_nested_base"] = keras.Model(inp, L.Dense(3, activation="softmax")(x))
    return out


@pytest.mark.slow
def test_every_model_shape_in_memory_and_reloaded(tmp_path):
    rng = np.random.default_rng(1)
    x = rng.uniform(0, 255, (4, 48, 48, 3)).astype(np.float32)
    cls = np.array([0, 1, 2, 0])
    for name, model in _shapes().items():
        ref = _runner(model)
        mem = ref.maps(x, cls, "gradcam")
        assert mem.shape == (4, 48, 48), name
        assert np.all(np.isfinite(mem)), name
        if "nested" in name:
            assert ref.path == "mobilenetv2/out_relu", name
        for ext in ("keras", "h5"):
            p = tmp_path / f"{name}.{ext}"
            model.save(p)
            clf = KerasClassifier(p)
            assert clf.cam_target().layer == ref.path, (name, ext)
            disk = clf.gradcam(x, cls)
            assert np.abs(disk - mem).max() < 1e-5, (name, ext)
        if "nested" in name:  # an explicit path into the nested base
            deep = clf.gradcam(x, cls, layer="mobilenetv2/block_13_expand_relu")
            assert deep.shape == (4, 48, 48)
            assert clf.cam_target("mobilenetv2/block_13_expand_relu").map_shape == (3, 3)


def test_bad_layer_path_lists_candidates():
    clf = KerasClassifier(SAMPLE_MODEL)
    for bad, why in (("conv9", "does not exist"), ("features", "no spatial")):
        with pytest.raises(InputError) as err:
            clf.cam_target(bad)
        text = str(err.value)
        assert why in text and "candidates" in text and "relu4" in text and "pool4" in text
    assert clf.cam_target("relu4").map_shape == (12, 12)


def test_model_without_convolution_does_not_apply(tmp_path):
    model = keras.Sequential([keras.Input((16, 16, 3)), L.Flatten(), L.Dense(3, activation="softmax")])
    with pytest.raises(CamNotApplicable):
        _runner(model)
    model2 = keras.Sequential(
        [keras.Input((16, 16, 3)), L.Rescaling(0.5), L.Flatten(), L.Dense(3, activation="softmax")]
    )
    p = tmp_path / "dense.keras"
    model2.save(p)
    with pytest.raises(CamNotApplicable, match=r"no convolutional layer|no layer with a spatial"):
        KerasClassifier(p).cam_target()


def test_no_conv_model_section_says_does_not_apply(tmp_path, colour_folder=None):
    from conftest import write_colour_folder

    from auditor.config import AuditConfig
    from auditor.pipeline import run_audit

    data = write_colour_folder(tmp_path / "data", n_per_class=4, size=(16, 16))
    model = keras.Sequential([keras.Input((16, 16, 3)), L.Flatten(), L.Dense(3, activation="softmax")])
    p = tmp_path / "dense.keras"
    model.save(p)
    cfg = AuditConfig(
        model_paths=(p,),
        data_path=data,
        n_bootstrap=0,
        sections={"preprocessing_check": {"samples": 0}, "perturbation_grid": {"samples": 3, "severities": (1,)}},
        out_dir=tmp_path / "out",
        enable=("gradcam",),  # an opt-in section
    )
    report = run_audit(cfg)[0]
    res = report.results["gradcam"]
    assert res.applicable is False
    assert "convolutional" in res.reason or "spatial" in res.reason
    assert not [f for f in report.failures if f.section == "gradcam"]


# ------------------------------------------------------------------------ focus, segmentation, sanity


def test_focus_score_by_hand():
    cam = np.zeros((4, 4))
    cam[0, 0], cam[0, 1], cam[3, 3] = 3.0, 1.0, 4.0
    mask = np.zeros((4, 4), bool)
    mask[:2, :2] = True
    assert focus_score(cam, mask) == pytest.approx(0.5)
    assert np.isnan(focus_score(cam, None))
    assert np.isnan(focus_score(np.zeros((4, 4)), mask))


def test_segmentation_fails_on_blank_and_finds_a_stained_disc():
    assert cell_mask(np.full((96, 96, 3), 230, np.uint8)) is None
    img = np.full((96, 96, 3), (235, 225, 215), np.uint8)  # cream background
    cv2.circle(img, (20, 20), 10, (230, 140, 150), -1)  # a pink red cell
    cv2.circle(img, (60, 55), 18, (110, 60, 170), -1)  # a purple white cell
    mask = cell_mask(img)
    truth = np.zeros((96, 96), np.uint8)
    cv2.circle(truth, (60, 55), 18, 1, -1)
    iou = np.logical_and(mask, truth).sum() / np.logical_or(mask, truth).sum()
    assert iou > 0.85


def test_spearman_matches_scipy():
    stats = pytest.importorskip("scipy.stats")
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=50), rng.normal(size=50)
    a[:5] = 0.0  # ties
    assert spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, abs=1e-12)


def test_sanity_check_randomised_maps_differ_and_model_is_untouched():
    clf = KerasClassifier(SAMPLE_MODEL)
    x = _sample_images(8)
    cls = clf.forward(x)[0].argmax(1)
    before = clf.gradcam(x, cls)
    stages = clf.cam_sanity(x, cls, seed=3)
    assert [s for s, _ in stages] == ["probabilities", "features", "conv4"]
    rho = [np.median([spearman(a, b) for a, b in zip(before, m, strict=True)]) for _, m in stages]
    print("sanity median rho per stage", rho)
    assert rho[-1] < 0.9  # randomised through the last conv: the maps change
    assert np.array_equal(clf.gradcam(x, cls), before)  # the audit's model was not randomised


# ------------------------------------------------------------------------ the model zoo, bad layers at set-up


@pytest.mark.slow
def test_every_zoo_architecture_in_memory_and_reloaded(tmp_path):
    """Every architecture of model_zoo (untrained, 32 px): a target layer is found (inside the nested base for
    the keras.applications heads), the maps are finite, and the model reloaded from .keras gives the same maps."""
    from model_zoo.registry import ARCHITECTURES

    rng = np.random.default_rng(2)
    x = rng.uniform(0, 255, (3, 32, 32, 3)).astype(np.float32)
    cls = np.array([0, 1, 2])
    for name, arch in ARCHITECTURES.items():
        model = arch.build(input_size=(32, 32), n_classes=3, seed=0)
        mem = _runner(model)
        maps = mem.maps(x, cls, "gradcam")
        assert maps.shape == (3, 32, 32) and np.all(np.isfinite(maps)), name
        if arch.pretrained_base:
            assert mem.path.startswith(arch.pretrained_base.lower() + "/"), (name, mem.path)
        p = tmp_path / f"{name}.keras"
        model.save(p)
        clf = KerasClassifier(p)
        assert clf.cam_target().layer == mem.path, name
        assert np.abs(clf.gradcam(x, cls) - maps).max() < 1e-5, name
        p.unlink()


def test_bad_layer_is_an_input_error_at_setup_before_any_forward_pass(tmp_path, monkeypatch):
    from auditor.config import AuditConfig
    from auditor.pipeline import run_audit

    def no_forward(*a, **k):
        raise AssertionError("a forward pass ran before the layer path was checked")

    monkeypatch.setattr(KerasClassifier, "forward", no_forward)
    for bad, why in (("conv9", "does not exist"), ("features", "no spatial")):
        cfg = AuditConfig(
            model_paths=(SAMPLE_MODEL,),
            data_path=SAMPLE_TEST,
            n_bootstrap=0,
            out_dir=tmp_path,
            enable=("gradcam",),
            sections={"gradcam": {"layer": bad}},
        )
        with pytest.raises(InputError) as err:
            run_audit(cfg, write=None)
        text = str(err.value)
        assert text.startswith("--cam-layer") and why in text and "candidates" in text and "pool4" in text, text


def test_sanity_summary_flags_maps_that_do_not_change():
    from auditor.analyses.gradcam import SANITY_FLAG, SanityResult, sanity_summary

    rng = np.random.default_rng(5)
    trained = rng.uniform(size=(6, 8, 8))
    same = sanity_summary(trained, [("top", trained + 1e-3 * rng.normal(size=trained.shape))])
    assert same.flagged and same.stages[0].median_spearman > 0.99
    fresh = sanity_summary(trained, [("top", rng.uniform(size=(6, 8, 8)))])
    assert not fresh.flagged and abs(fresh.stages[0].median_spearman) < SANITY_FLAG
    # the cross-image scale: image i against image i + 1, by hand
    expect = np.median([spearman(trained[i], trained[(i + 1) % 6]) for i in range(6)])
    assert fresh.cross_image_spearman == pytest.approx(expect)
    assert SanityResult.from_dict(fresh.to_dict()).cross_image_spearman == pytest.approx(expect)
