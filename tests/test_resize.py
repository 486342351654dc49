"""Every resize method, crop and channel order against the library call it claims to reproduce.

References are the libraries themselves (keras.utils.load_img, cv2.resize, tf.image.resize, Keras's
image_dataset_from_directory / smart_resize, tf.image.central_crop, vgg16.preprocess_input), never our code.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")
from PIL import Image

from auditor import resize as rz
from auditor.data import decode_image
from auditor.errors import InputError
from auditor.model import KerasClassifier, decode_tf

# odd sizes: shrinking, upscaling, non-square, one pixel wide / high / both
SHAPES = [(37, 53), (90, 17), (5, 3), (1, 40), (40, 1), (1, 1), (24, 24), (13, 13)]
TARGETS = [(24, 24), (16, 20)]


def _images(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, s + (3,), dtype=np.uint8) for s in SHAPES]


@pytest.fixture(scope="module")
def adapters(tmp_path_factory):
    out = {}
    for h, w in TARGETS:
        keras.utils.set_random_seed(0)
        model = keras.Sequential(
            [keras.Input((h, w, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")]
        )
        path = tmp_path_factory.mktemp("rz") / f"m{h}x{w}.keras"
        model.save(path)
        out[(h, w)] = KerasClassifier(path)
    return out


def _png(img: np.ndarray) -> io.BytesIO:
    buf = io.BytesIO()
    Image.fromarray(img).save(buf, format="PNG")
    buf.seek(0)
    return buf


def test_library_constants_match():
    assert (rz.PIL_NEAREST, rz.PIL_BILINEAR, rz.PIL_BICUBIC, rz.PIL_LANCZOS, rz.PIL_BOX, rz.PIL_HAMMING) == (
        Image.Resampling.NEAREST,
        Image.Resampling.BILINEAR,
        Image.Resampling.BICUBIC,
        Image.Resampling.LANCZOS,
        Image.Resampling.BOX,
        Image.Resampling.HAMMING,
    )
    assert (rz.CV2_NEAREST, rz.CV2_LINEAR, rz.CV2_AREA, rz.CV2_CUBIC, rz.CV2_LANCZOS4) == (
        cv2.INTER_NEAREST,
        cv2.INTER_LINEAR,
        cv2.INTER_AREA,
        cv2.INTER_CUBIC,
        cv2.INTER_LANCZOS4,
    )
    # keras load_img's names are exactly the pil family
    from keras.src.utils.image_utils import PIL_INTERPOLATION_METHODS

    assert {f"pil:{k}" for k in PIL_INTERPOLATION_METHODS} == {n for n, m in rz.METHODS.items() if m.family == "pil"}
    for name, m in rz.METHODS.items():
        assert m.name == name and m.family in rz.FAMILIES and m.call and m.reproduces
        assert name.startswith(f"{m.family}:") == (m.family != "plain")


def test_flow_from_directory_default_is_pil_nearest():
    import inspect

    from keras.src.legacy.preprocessing.image import ImageDataGenerator

    default = inspect.signature(ImageDataGenerator.flow_from_directory).parameters["interpolation"].default
    assert default == "nearest"
    assert "flow_from_directory default ('nearest')" in rz.METHODS["pil:nearest"].reproduces
    assert inspect.signature(keras.utils.load_img).parameters["interpolation"].default == "nearest"


def _reference(img, target, method, crop="none"):
    """What the named library produces for one uint8 image, as float32."""
    h, w = target
    m = rz.METHODS[method]
    if m.family == "pil":
        assert crop in ("none", "center-square")
        pil = keras.utils.load_img(
            _png(img), target_size=(h, w), interpolation=method[4:], keep_aspect_ratio=crop == "center-square"
        )
        return keras.utils.img_to_array(pil)
    if crop == "center-square" and m.family != "plain":
        # the crop box as keras smart_resize computes it (float arithmetic, at least one row/column)
        H, W = img.shape[:2]
        ch = max(min(H, int(float(W * h) / w)), 1)
        cw = max(min(W, int(float(H * w) / h)), 1)
        top, left = int(float(H - ch) / 2), int(float(W - cw) / 2)
        src = tf.convert_to_tensor(img[top : top + ch, left : left + cw])
        crop = "none"
    elif crop == "center-square":
        src = tf.convert_to_tensor(img)
    elif crop.startswith("center:"):
        src = tf.image.central_crop(tf.convert_to_tensor(img), float(crop[7:]))
    else:
        src = tf.convert_to_tensor(img)
    if m.family == "cv2":
        return cv2.resize(np.asarray(src), (w, h), interpolation=m.kernel).astype(np.float32)
    if crop == "center-square":
        from keras.src.backend import tensorflow as tf_backend
        from keras.src.utils import image_utils

        return np.asarray(
            image_utils.smart_resize(src, (h, w), interpolation=m.kernel, backend_module=tf_backend), dtype=np.float32
        )
    return tf.image.resize(src, (h, w), method=m.kernel, antialias=m.antialias).numpy()


@pytest.mark.parametrize("method", rz.RESIZE_NAMES)
def test_every_method_equals_its_library(adapters, method):
    imgs = _images()
    for target, clf in adapters.items():
        ours = clf.prepare(imgs, resize=method, scaling="raw")
        assert ours.dtype == np.float32 and ours.shape == (len(imgs),) + target + (3,)
        for img, got in zip(imgs, ours):
            ref = _reference(img, target, method)
            np.testing.assert_array_equal(got, ref, err_msg=f"{method} {img.shape[:2]} -> {target}")
        if rz.METHODS[method].family in ("pil", "cv2"):  # uint8 libraries: whole grey levels
            assert np.array_equal(ours, np.round(ours))


@pytest.mark.parametrize(
    "method",
    [
        "bilinear",
        "nearest",
        "area",
        "bicubic",
        "pil:bilinear",
        "pil:lanczos",
        "pil:nearest",
        "cv2:area",
        "cv2:linear",
        "tf:bilinear-aa",
    ],
)
def test_center_square_equals_keras_crop_to_aspect_ratio(adapters, method):
    imgs = _images(1)
    for target, clf in adapters.items():
        ours = clf.prepare(imgs, resize=method, scaling="raw", crop="center-square")
        for img, got in zip(imgs, ours):
            np.testing.assert_array_equal(
                got, _reference(img, target, method, "center-square"), err_msg=f"{method} {img.shape[:2]} -> {target}"
            )


def test_center_square_equals_image_dataset_from_directory(adapters, tmp_path):
    """The folder loader itself, crop_to_aspect_ratio=True, on PNGs of mixed sizes."""
    imgs = _images(2)
    (tmp_path / "a").mkdir()
    for i, img in enumerate(imgs):
        Image.fromarray(img).save(tmp_path / "a" / f"{i:02d}.png")
    for target, clf in adapters.items():
        for method in ("bilinear", "area"):
            ds = keras.utils.image_dataset_from_directory(
                tmp_path,
                image_size=target,
                batch_size=None,
                shuffle=False,
                crop_to_aspect_ratio=True,
                interpolation=method,
                verbose=False,
            )
            ref = np.stack([x.numpy() for x, _ in ds])
            ours = clf.prepare(imgs, resize=method, scaling="raw", crop="center-square")
            np.testing.assert_array_equal(ours, ref)


def test_center_fraction_equals_central_crop(adapters):
    imgs = _images(3)
    for target, clf in adapters.items():
        for crop in ("center:0.5", "center:0.56", "center:1", "center:0.9"):
            for method in ("bilinear", "cv2:area", "tf:lanczos3-aa"):
                ours = clf.prepare(imgs, resize=method, scaling="raw", crop=crop)
                for img, got in zip(imgs, ours):
                    np.testing.assert_array_equal(got, _reference(img, target, method, crop))
    # BloodMNIST: 360 -> central 200 (fraction 5/9), as tf.image.central_crop
    assert rz.crop_box(360, 360, "center:0.5555555555555556", (28, 28)) == (80, 80, 200, 200)


def test_pil_center_fraction_is_crop_then_resize(adapters):
    img = _images(4)[0]
    clf = adapters[(24, 24)]
    got = clf.prepare([img], resize="pil:bicubic", scaling="raw", crop="center:0.5")[0]
    top, left, ch, cw = rz.crop_box(*img.shape[:2], "center:0.5", (24, 24))
    ref = np.asarray(Image.fromarray(img).crop((left, top, left + cw, top + ch)).resize((24, 24), Image.BICUBIC))
    np.testing.assert_array_equal(got, ref.astype(np.float32))


def test_channels_and_caffe_match_cv2_imread_plus_preprocess_input(adapters, tmp_path):
    """cv2.imread (BGR) + cv2.resize + vgg16.preprocess_input is
    --resize cv2:linear --channels bgr --preprocess caffe."""
    rgb = _images(5)[0]
    path = tmp_path / "x.png"
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    bgr = cv2.resize(cv2.imread(str(path)), (24, 24)).astype(np.float32)
    ref = keras.applications.vgg16.preprocess_input(bgr.copy())
    clf = adapters[(24, 24)]
    ours = clf.prepare([rgb], resize="cv2:linear", scaling="caffe", channels="bgr")[0]
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
    plain_bgr = clf.prepare([rgb], resize="cv2:linear", scaling="raw", channels="bgr")[0]
    np.testing.assert_array_equal(plain_bgr, bgr)
    # and the RGB default is the usual load_img + preprocess_input
    rgb_ref = keras.applications.vgg16.preprocess_input(cv2.resize(rgb, (24, 24)).astype(np.float32))
    np.testing.assert_allclose(clf.prepare([rgb], resize="cv2:linear", scaling="caffe")[0], rgb_ref, atol=1e-4)
    assert not np.allclose(ours, rgb_ref, atol=1)


def test_tf_family_lists_what_tf_supports():
    """area and nearest take no antialias in tf.image.resize (area-aa would equal area): not offered."""
    img = _images(6)[0][None]
    a = tf.image.resize(img, (7, 9), method="area", antialias=True).numpy()
    b = tf.image.resize(img, (7, 9), method="area", antialias=False).numpy()
    assert np.array_equal(a, b)
    assert "tf:area-aa" not in rz.METHODS and "tf:nearest-aa" not in rz.METHODS


def test_validation_messages():
    with pytest.raises(InputError) as e:
        rz.check_resize("bilnear", "--resize")
    msg = str(e.value)
    for name in rz.RESIZE_NAMES:
        assert name in msg
    assert msg.count("\n") == 0
    for bad in ("center:1.5", "center:0", "center:-1", "center:x", "middle"):
        with pytest.raises(InputError, match="--crop"):
            rz.check_crop(bad, "--crop")
    for good in ("none", "center-square", "center:1", "center:0.01"):
        assert rz.check_crop(good, "--crop") == good
    with pytest.raises(InputError, match="rgb, bgr"):
        rz.check_channels("RGB", "--channels")


# ------------------------------------------------------------------------------ real PBC images


def _real_files(n=6):
    root = os.environ.get("WBC_REAL_DATA")
    if not root or not Path(root).is_dir():
        pytest.skip("WBC_REAL_DATA is not set to the pbc5 folder; real-image checks skipped")
    files = sorted(p for p in Path(root).glob("*/*/*.jpg") if not p.name.startswith("."))
    return files[:: max(1, len(files) // n)][:n]


def test_real_images_each_family_reproduces_its_loader(tmp_path_factory):
    files = _real_files()
    keras.utils.set_random_seed(0)
    model = keras.Sequential(
        [keras.Input((64, 64, 3)), keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(2, activation="softmax")]
    )
    path = tmp_path_factory.mktemp("real") / "m.keras"
    model.save(path)
    clf = KerasClassifier(path)
    for f in files:
        data = f.read_bytes()
        # decoders: PIL == load_img's pixels, tf == image_dataset_from_directory's
        pil_px = decode_image(data, f.name, "pil")
        np.testing.assert_array_equal(pil_px, keras.utils.img_to_array(keras.utils.load_img(f)).astype(np.uint8))
        tf_px = decode_image(data, f.name, decode_tf)
        np.testing.assert_array_equal(tf_px, tf.io.decode_image(data, channels=3).numpy())
        cv_px = decode_image(data, f.name)
        np.testing.assert_array_equal(cv_px, cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB))
        for method in ("pil:bilinear", "pil:nearest", "pil:lanczos", "pil:box", "pil:hamming", "pil:bicubic"):
            for crop in ("none", "center-square"):
                ref = keras.utils.img_to_array(
                    keras.utils.load_img(
                        f, target_size=(64, 64), interpolation=method[4:], keep_aspect_ratio=crop == "center-square"
                    )
                )
                np.testing.assert_array_equal(clf.prepare([pil_px], resize=method, scaling="raw", crop=crop)[0], ref)
        for method in ("cv2:linear", "cv2:area", "cv2:cubic", "cv2:nearest", "cv2:lanczos4"):
            ref = cv2.resize(cv2.imread(str(f)), (64, 64), interpolation=rz.METHODS[method].kernel)
            got = clf.prepare([cv_px], resize=method, scaling="raw", channels="bgr")[0]
            np.testing.assert_array_equal(got, ref.astype(np.float32))
        for method in ("bilinear", "area", "bicubic", "tf:bilinear-aa", "tf:lanczos5-aa"):
            m = rz.METHODS[method]
            ref = tf.image.resize(
                tf.io.decode_image(data, channels=3), (64, 64), method=m.kernel, antialias=m.antialias
            ).numpy()
            np.testing.assert_array_equal(clf.prepare([tf_px], resize=method, scaling="raw")[0], ref)
