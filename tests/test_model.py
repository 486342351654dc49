"""The Keras adapter on tiny models: loading, shape checks, output type, features, preprocessing."""

from __future__ import annotations

import numpy as np
import pytest

keras = pytest.importorskip("keras")

from auditor.errors import InputError
from auditor.model import KerasClassifier
from tests.conftest import colour_model


def _images(n=6, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (20 + i, 30, 3), dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_in_memory_and_reloaded_model_agree(tmp_path, suffix):
    model = colour_model()
    path = tmp_path / f"m{suffix}"
    model.save(path)
    clf = KerasClassifier(path)
    x = clf.prepare(_images(), resize="bilinear", scaling="raw")
    probs, feats = clf.forward(x)
    expected = model.predict(x, verbose=0)
    np.testing.assert_allclose(probs, expected, rtol=1e-5, atol=1e-6)
    assert clf.info.output_type == "probabilities"
    assert clf.info.input_shape == (16, 16, 3)
    assert clf.info.starts_with_rescaling
    assert feats.shape == (6, 3)  # the input of the last Dense layer
    hidden = keras.Model(model.inputs, model.get_layer("features").output).predict(x, verbose=0)
    np.testing.assert_allclose(feats, hidden, rtol=1e-5, atol=1e-6)
    assert clf.info.param_count == model.count_params()


def test_logits_are_detected_and_softmaxed(tmp_path):
    model = colour_model(softmax=False)
    path = tmp_path / "logits.keras"
    model.save(path)
    clf = KerasClassifier(path)
    x = clf.prepare(_images(), resize="bilinear", scaling="raw")
    probs, _ = clf.forward(x)
    z = model.predict(x, verbose=0).astype(np.float64)
    ref = np.exp(z - z.max(1, keepdims=True))
    ref /= ref.sum(1, keepdims=True)
    np.testing.assert_allclose(probs, ref, rtol=1e-6)
    assert clf.info.output_type == "logits"


def test_resize_matches_keras_loader_bit_for_bit(tmp_path):
    """The adapter's bilinear resize is the one keras.utils.image_dataset_from_directory applies."""
    import cv2
    import tensorflow as tf

    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (37, 53, 3), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    cv2.imwrite(str(tmp_path / "a" / "x.png"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    ds = keras.utils.image_dataset_from_directory(tmp_path, image_size=(16, 16), batch_size=1, shuffle=False)
    ref = next(iter(ds))[0].numpy()[0]
    model = colour_model()
    path = tmp_path / "m.keras"
    model.save(path)
    ours = KerasClassifier(path).prepare([img], resize="bilinear", scaling="raw")[0]
    assert np.array_equal(ours, ref)
    assert not np.array_equal(ours, tf.image.resize(img, (16, 16), antialias=True).numpy())


def test_text_file_named_keras_is_a_clear_input_error(tmp_path):
    path = tmp_path / "model.keras"
    path.write_text("this is not a model")
    with pytest.raises(InputError, match=r"model\.keras: is not a Keras model"):
        KerasClassifier(path)


def test_missing_model_and_wrong_extension(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        KerasClassifier(tmp_path / "nope.keras")
    other = tmp_path / "model.pt"
    other.write_bytes(b"\0" * 10)
    with pytest.raises(InputError, match=r"extension '\.pt'"):
        KerasClassifier(other)
    h5 = tmp_path / "model.h5"
    h5.write_bytes(b"not hdf5 at all")
    with pytest.raises(InputError, match="not an HDF5 model"):
        KerasClassifier(h5)


def test_output_of_rank_three_is_not_an_image_classifier(tmp_path):
    inp = keras.Input((16, 16, 3))
    out = keras.layers.Conv2D(4, 3, padding="same", activation="softmax")(inp)
    out = keras.layers.Reshape((256, 4))(out)
    path = tmp_path / "seg.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(InputError, match=r"not an image classifier: output shape .* rank 3"):
        KerasClassifier(path)


def test_lambda_layer_needs_unsafe_flag(tmp_path):
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Lambda(lambda t: t * 2.0)(inp)
    x = keras.layers.GlobalAveragePooling2D()(x)
    out = keras.layers.Dense(2, activation="softmax")(x)
    path = tmp_path / "lambda.keras"
    keras.Model(inp, out).save(path)
    with pytest.raises(InputError, match="--unsafe-deserialization"):
        KerasClassifier(path)
    clf = KerasClassifier(path, unsafe=True)
    assert clf.info.safe_mode is False
    probs, _ = clf.forward(clf.prepare(_images(2), resize="bilinear", scaling="unit"))
    np.testing.assert_allclose(probs.sum(1), 1.0)


def test_grayscale_model_gets_one_channel(tmp_path):
    inp = keras.Input((12, 12, 1))
    x = keras.layers.GlobalAveragePooling2D()(inp)
    out = keras.layers.Dense(2, activation="softmax")(x)
    path = tmp_path / "gray.keras"
    keras.Model(inp, out).save(path)
    clf = KerasClassifier(path)
    x = clf.prepare(_images(3), resize="area", scaling="unit")
    assert x.shape == (3, 12, 12, 1) and 0 <= x.min() and x.max() <= 1
    assert clf.forward(x)[0].shape == (3, 2)


def test_savedmodel_directory_loads_without_features(tmp_path):
    model = colour_model()
    export = tmp_path / "exported"
    model.export(export, verbose=False)
    clf = KerasClassifier(export)
    assert clf.format == "savedmodel"
    x = clf.prepare(_images(3), resize="bilinear", scaling="raw")
    probs, feats = clf.forward(x)
    np.testing.assert_allclose(probs, model.predict(x, verbose=0), rtol=1e-5, atol=1e-6)
    assert feats.shape == (3, 0)
    assert "SavedModel" in clf.features_note


@pytest.mark.parametrize("method", ["bilinear", "area", "nearest", "bicubic"])
def test_equal_size_resize_is_the_identity_we_skip(method):
    import tensorflow as tf

    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    ref = tf.image.resize(img[None], (16, 16), method=method, antialias=False).numpy()[0]
    assert np.array_equal(ref, img.astype(np.float32))


def test_nested_caffe_base_is_detected_without_a_sidecar(tmp_path):
    """A head on a nested base named like keras.applications' VGG16 gets caffe scaling under auto."""
    from auditor.config import AuditConfig
    from auditor.data import discover
    from auditor.pipeline import prepare_model
    from tests.conftest import write_colour_folder

    base_in = keras.Input((16, 16, 3))
    base = keras.Model(base_in, keras.layers.Conv2D(4, 3)(base_in), name="vgg16")
    inp = keras.Input((16, 16, 3))
    x = keras.layers.GlobalAveragePooling2D()(base(inp))
    out = keras.layers.Dense(3, activation="softmax")(x)
    path = tmp_path / "vgg_head.keras"
    keras.Model(inp, out).save(path)
    data = write_colour_folder(tmp_path / "d", n_per_class=1)
    pm = prepare_model(AuditConfig(model_paths=(path,), data_path=data), path, discover(data))
    assert pm.scaling == "caffe" and "vgg16" in pm.scaling_source
    assert pm.adapter.info.feature_dim == 4
