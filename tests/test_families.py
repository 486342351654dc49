"""Every keras.applications family is fed the pixels its own ``preprocess_input`` gives (--preprocess auto).

Each family's base (weights=None, smallest input it allows, include_top=False) is nested in a small head,
in a Sequential and in a Functional model; the pixels the audit feeds (``adapter.prepare`` with the scaling
``prepare_model`` decides, no sidecar) must equal ``keras.applications.<module>.preprocess_input`` of the
same decoded image, resized the same way, in memory and after saving and reloading the model. For the
families whose base holds its own preprocessing layers ``preprocess_input`` is the identity, so the
comparison is on what the base receives (raw pixels in [0, 255]).
"""

from __future__ import annotations

import numpy as np
import pytest

from auditor import families
from auditor.config import AuditConfig
from auditor.data import discover
from tests.conftest import write_colour_folder

keras = pytest.importorskip("keras")
tf = pytest.importorskip("tensorflow")

from auditor.model import recognise_base
from auditor.pipeline import prepare_model
from auditor.preprocess import scale_pixels

# (constructor, keras.applications module, input size, extra kwargs, expected family, expected scaling)
SPECS = [
    ("VGG16", "vgg16", 32, {}, "VGG", "caffe"),
    ("ResNet50", "resnet", 32, {}, "ResNet", "caffe"),
    ("ResNet50V2", "resnet_v2", 32, {}, "ResNetV2", "symmetric"),
    ("DenseNet121", "densenet", 32, {}, "DenseNet", "torch"),
    ("InceptionV3", "inception_v3", 75, {}, "InceptionV3", "symmetric"),
    ("InceptionResNetV2", "inception_resnet_v2", 75, {}, "InceptionResNetV2", "symmetric"),
    ("Xception", "xception", 71, {}, "Xception", "symmetric"),
    ("MobileNet", "mobilenet", 32, {"alpha": 0.25}, "MobileNet", "symmetric"),
    ("MobileNetV2", "mobilenet_v2", 32, {"alpha": 0.35}, "MobileNetV2", "symmetric"),
    ("MobileNetV3Small", "mobilenet_v3", 32, {"minimalistic": True}, "MobileNetV3", "raw"),
    ("NASNetMobile", "nasnet", 32, {}, "NASNet", "symmetric"),
    ("EfficientNetB0", "efficientnet", 32, {}, "EfficientNet", "raw"),
    ("EfficientNetV2B0", "efficientnet_v2", 32, {}, "EfficientNetV2", "raw"),
    ("ConvNeXtTiny", "convnext", 32, {}, "ConvNeXt", "raw"),
]
IMAGE = np.random.default_rng(7).integers(0, 256, (40, 50, 3), dtype=np.uint8)  # a decoded RGB image


def _reference(module: str, size: int) -> np.ndarray:
    """keras.applications.<module>.preprocess_input of IMAGE resized as Keras's folder loader does."""
    resized = tf.image.resize(IMAGE[None].astype(np.float32), (size, size), method="bilinear", antialias=False).numpy()
    return np.asarray(getattr(keras.applications, module).preprocess_input(resized.copy()))


def _heads(fn: str, size: int, kwargs: dict):
    """The base nested in a Sequential and in a Functional head (pooling + Dense softmax over 3 classes)."""
    make = getattr(keras.applications, fn)
    base = make(include_top=False, weights=None, input_shape=(size, size, 3), **kwargs)
    seq = keras.Sequential(
        [
            keras.Input((size, size, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, activation="softmax"),
        ],
        name="seq_head",
    )
    base2 = make(include_top=False, weights=None, input_shape=(size, size, 3), **kwargs)
    inp = keras.Input((size, size, 3))
    x = keras.layers.GlobalAveragePooling2D()(base2(inp))
    fun = keras.Model(inp, keras.layers.Dense(3, activation="softmax")(x), name="fun_head")
    return base, {"sequential": seq, "functional": fun}


@pytest.fixture(scope="module")
def data3(tmp_path_factory):
    root = write_colour_folder(tmp_path_factory.mktemp("fam_data"), n_per_class=1)
    return root, discover(root)


@pytest.mark.slow
@pytest.mark.parametrize("fn,module,size,kwargs,family,scaling", SPECS, ids=[s[0] for s in SPECS])
def test_auto_scaling_equals_preprocess_input(fn, module, size, kwargs, family, scaling, data3, tmp_path):
    root, index = data3
    base, models = _heads(fn, size, kwargs)
    # the layer cues pick out exactly this family, and the default base name matches its pattern
    assert [f.name for f in families.families_by_layers(layer.name for layer in base.layers)] == [family]
    assert families.family_by_name(base.name).name == family
    ref = _reference(module, size)
    if scaling == "raw":  # preprocess_input is the identity: the base receives [0, 255] pixels
        np.testing.assert_array_equal(ref, tf.image.resize(IMAGE[None].astype(np.float32), (size, size)).numpy())
    for kind, model in models.items():
        rec = recognise_base(model)  # in memory
        assert rec is not None and rec.family == family and rec.scaling == scaling, (kind, rec)
        assert rec.cue == "layer names"
        resized = tf.image.resize(IMAGE[None].astype(np.float32), (size, size), antialias=False).numpy()
        assert np.max(np.abs(scale_pixels(resized, rec.scaling) - ref)) < 1e-4
        path = tmp_path / f"{kind}.keras"  # after save and reload, through the pipeline's own decision
        model.save(path)
        config = AuditConfig(model_paths=(path,), data_path=root, workers=1)
        pm = prepare_model(config, path, index)
        assert pm.scaling == scaling and pm.adapter.info.base_family == family
        assert f"({family} family" in pm.scaling_source and pm.scaling_source.startswith("auto: ")
        fed = pm.adapter.prepare([IMAGE], resize=pm.resize, scaling=pm.scaling)
        assert fed.shape == ref.shape
        assert np.max(np.abs(fed - ref)) < 1e-4, (kind, np.max(np.abs(fed - ref)))


def test_every_family_has_a_distinct_pattern_and_cues():
    assert len({f.name for f in families.FAMILIES}) == len(families.FAMILIES)
    for fam in families.FAMILIES:
        assert fam.scaling in ("caffe", "symmetric", "torch", "raw")
        assert hasattr(keras.applications, fam.module), fam.module
    names = {
        "mobilenetv2_0.35_96": "MobileNetV2",
        "mobilenet_0.25_128": "MobileNet",
        "densenet169": "DenseNet",
        "resnet101v2": "ResNetV2",
        "resnet152": "ResNet",
        "efficientnetv2-s": "EfficientNetV2",
        "MobileNetV3Large": "MobileNetV3",
        "NASNet": "NASNet",
        "convnext_xlarge": "ConvNeXt",
        "vgg19": "VGG",
        "efficientnetb7": "EfficientNet",
        "inception_resnet_v2": "InceptionResNetV2",
    }
    for name, fam in names.items():
        assert families.family_by_name(name).name == fam, name
    assert families.family_by_name("my_cnn") is None and families.family_by_name("resnet50_finetuned") is None


def test_renamed_nested_base_is_recognised_by_its_layers():
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3), name="backbone")
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    rec = recognise_base(model)
    assert (rec.family, rec.scaling, rec.base_name) == ("ResNet", "caffe", "backbone")
    assert "'backbone' (ResNet family, recognised by its layer names) expects caffe" in rec.note


def test_flat_base_built_into_the_model_is_recognised():
    inp = keras.Input((32, 32, 3))
    base = keras.applications.MobileNetV2(include_top=False, weights=None, input_tensor=inp, alpha=0.35)
    out = keras.layers.Dense(3, activation="softmax")(keras.layers.GlobalAveragePooling2D()(base.output))
    model = keras.Model(inp, out)
    assert not any(isinstance(layer, keras.Model) for layer in model.layers)  # really flat
    rec = recognise_base(model)
    assert (rec.family, rec.scaling, rec.base_name) == ("MobileNetV2", "symmetric", None)
    assert "not nested" in rec.note


def test_base_known_only_by_its_name_and_a_plain_cnn():
    inner = keras.Sequential([keras.Input((16, 16, 3)), keras.layers.Conv2D(4, 3)], name="mobilenetv2_0.35_96")
    model = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            inner,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    rec = recognise_base(model)
    assert (rec.family, rec.scaling, rec.cue) == ("MobileNetV2", "symmetric", "model name")
    plain = keras.Sequential(
        [
            keras.Input((16, 16, 3)),
            keras.layers.Conv2D(4, 3, name="conv1"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    assert recognise_base(plain) is None


@pytest.mark.parametrize(
    "fn,kwargs,expected",
    [
        ("MobileNetV3Small", {"minimalistic": True}, "symmetric"),  # documented: [-1, 1] without its Rescaling
        ("EfficientNetV2B0", {}, "symmetric"),  # documented: [-1, 1] without its preprocessing
        ("ConvNeXtTiny", {}, "torch"),  # the ImageNet mean/std its omitted Normalization layer would apply
    ],
)
def test_bases_built_without_their_preprocessing_layers(fn, kwargs, expected):
    base = getattr(keras.applications, fn)(
        include_top=False, weights=None, input_shape=(32, 32, 3), include_preprocessing=False, **kwargs
    )
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    rec = recognise_base(model)
    assert rec.scaling == expected and not rec.own_preprocessing and "include_preprocessing=False" in rec.note


def test_user_rescaling_in_front_of_a_base_wins():
    base = keras.applications.ResNet50(include_top=False, weights=None, input_shape=(32, 32, 3))
    model = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            keras.layers.Rescaling(1 / 255.0),
            base,
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    rec = recognise_base(model)
    assert rec.scaling == "raw" and "own Rescaling/Normalization layer in front of" in rec.note


def test_torch_scaling_by_hand():
    x = np.array([[[[0.0, 127.5, 255.0]]]], dtype=np.float32)
    expected = (np.array([0.0, 0.5, 1.0]) - [0.485, 0.456, 0.406]) / [0.229, 0.224, 0.225]
    np.testing.assert_allclose(scale_pixels(x, "torch")[0, 0, 0], expected, rtol=1e-6)
