"""The published white-blood-cell classifier architectures, one builder each, and their registry.

Every builder has the signature ``build(input_size=(h, w), n_classes=..., weights=None, seed=None)`` and
returns an uncompiled ``keras.Model`` that takes RGB images of ``input_size`` and ends in a softmax.
Nothing is downloaded: ``weights=None`` (the default) initialises at random; ``weights="imagenet"`` is
passed through to ``keras.applications`` for the heads with an ImageNet base (users who are online), and
any other value is a path to a weights file (``model.load_weights`` for our own CNNs, the base's
weights for the ImageNet heads).

Only stock Keras layers are used (no ``Lambda``, no custom classes), so every model saves to ``.keras``
and loads back with ``safe_mode=True`` in a process that has never imported this module (as
``wbc-audit`` does). The pixel scaling each model expects is recorded in :data:`ARCHITECTURES`
(``preprocess``, one of the sidecar's ``unit | raw | symmetric | caffe``):

* our own CNNs start with a ``Rescaling(1/255)`` layer: they take ``raw`` 0..255 pixels;
* EfficientNetB0 has its own ``Rescaling``/``Normalization`` inside: ``raw``;
* the VGG16 and ResNet50 bases expect ``caffe`` input (RGB->BGR, minus the ImageNet channel means),
  the mode of ``keras.applications.vgg16/resnet50.preprocess_input``; it is applied outside the model
  (by the trainer's input pipeline, by ``wbc-audit`` from the sidecar), as in the studies.

A pretrained base is nested in the model as one sub-model layer (named ``vgg16``, ``resnet50``,
``efficientnetb0``), frozen (``trainable=False``, called with ``training=False``) when ``weights`` is given.
"""

from __future__ import annotations

from collections.abc import Callable

import keras
from keras import layers

from .registry import ARCHITECTURES, Architecture, get  # noqa: F401 - re-exported
from .small_cnn import build_small_cnn

Size = tuple[int, int]


def _size(input_size) -> Size:
    if isinstance(input_size, int):
        return int(input_size), int(input_size)
    h, w = input_size
    return int(h), int(w)


def _seed(seed: int | None) -> None:
    if seed is not None:
        keras.utils.set_random_seed(int(seed))


def _load_own_weights(model: keras.Model, weights) -> keras.Model:
    if weights is not None:
        if weights == "imagenet":
            raise ValueError(f"{model.name} has no ImageNet weights; weights must be None or a weights file")
        model.load_weights(weights)
    return model


def _image_input(input_size) -> keras.KerasTensor:
    h, w = _size(input_size)
    return keras.Input(shape=(h, w, 3), name="image")


def _conv_block(
    x,
    filters: int,
    kernel: int,
    name: str,
    *,
    n: int = 1,
    pool: bool = True,
    dropout: float = 0.0,
    activation: str = "relu",
):
    for i in range(n):
        suffix = f"_{i + 1}" if n > 1 else ""
        x = layers.Conv2D(filters, kernel, padding="same", name=f"{name}_conv{suffix}")(x)
        if activation == "leaky":
            x = layers.LeakyReLU(negative_slope=0.1, name=f"{name}_leaky{suffix}")(x)
            x = layers.BatchNormalization(name=f"{name}_bn{suffix}")(x)
        else:
            x = layers.BatchNormalization(name=f"{name}_bn{suffix}")(x)
            x = layers.Activation(activation, name=f"{name}_{activation}{suffix}")(x)
    if pool:
        x = layers.MaxPooling2D(2, name=f"{name}_pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name=f"{name}_dropout")(x)
    return x


# ------------------------------------------------------------------------------------------ our CNNs


def wbc_cnn(input_size: Size = (128, 128), n_classes: int = 5, weights=None, seed: int | None = None) -> keras.Model:
    """The reference WBC trust study's CNN: four blocks of two 3x3 convolutions (64, 128, 256, 512
    filters) with BatchNorm and ReLU, 2x2 max-pooling and dropout 0.25; Flatten; Dense 1024 and 512
    (ReLU, dropout 0.5); softmax. Takes raw 0..255 pixels (a Rescaling layer comes first)."""
    _seed(seed)
    inputs = _image_input(input_size)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((64, 128, 256, 512)):
        x = _conv_block(x, filters, 3, f"block{i + 1}", n=2, dropout=0.25)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(1024, activation="relu", name="fc1")(x)
    x = layers.Dropout(0.5, name="fc1_dropout")(x)
    x = layers.Dense(512, activation="relu", name="features")(x)
    x = layers.Dropout(0.5, name="features_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return _load_own_weights(keras.Model(inputs, outputs, name="wbc_cnn"), weights)


def attention_cnn(
    input_size: Size = (128, 128), n_classes: int = 5, weights=None, seed: int | None = None
) -> keras.Model:
    """The multi-head CNN study's model: two parallel convolution heads on the image, one with large
    (8x8) and one with small (5x5) kernels, each with BatchNorm, ReLU and max-pooling, concatenated;
    a 5x5 convolution block; an attention block (squeeze-and-excitation channel attention followed by a
    7x7 sigmoid spatial attention map, both applied with ``Multiply``); a 3x3 convolution block; global
    average pooling; Dense 128 (ReLU, dropout 0.5); softmax. Takes raw 0..255 pixels."""
    _seed(seed)
    inputs = _image_input(input_size)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    large = _conv_block(x, 32, 8, "head_large")
    small = _conv_block(x, 32, 5, "head_small")
    x = layers.Concatenate(name="heads")([large, small])
    x = _conv_block(x, 64, 5, "block2")
    channels = 64
    # channel attention (squeeze and excitation)
    s = layers.GlobalAveragePooling2D(name="att_squeeze")(x)
    s = layers.Dense(channels // 8, activation="relu", name="att_reduce")(s)
    s = layers.Dense(channels, activation="sigmoid", name="att_expand")(s)
    s = layers.Reshape((1, 1, channels), name="att_channel_weights")(s)
    x = layers.Multiply(name="att_channel")([x, s])
    # spatial attention
    a = layers.Conv2D(1, 7, padding="same", activation="sigmoid", name="att_spatial_map")(x)
    x = layers.Multiply(name="att_spatial")([x, a])
    x = _conv_block(x, 128, 3, "block3")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(128, activation="relu", name="features")(x)
    x = layers.Dropout(0.5, name="features_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return _load_own_weights(keras.Model(inputs, outputs, name="attention_cnn"), weights)


def bloodmnist_cnn(
    input_size: Size = (28, 28), n_classes: int = 8, weights=None, seed: int | None = None
) -> keras.Model:
    """The BloodMNIST study's small CNN: Conv 3x3 (32, ReLU, valid) + MaxPool, Conv 3x3 (64, ReLU,
    valid) + MaxPool, Flatten, Dense 128 (ReLU, dropout 0.5), softmax. 28x28 input and 8 classes by
    default (BloodMNIST's). Takes raw 0..255 pixels."""
    _seed(seed)
    inputs = _image_input(input_size)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    x = layers.Conv2D(32, 3, activation="relu", name="conv1")(x)
    x = layers.MaxPooling2D(2, name="pool1")(x)
    x = layers.Conv2D(64, 3, activation="relu", name="conv2")(x)
    x = layers.MaxPooling2D(2, name="pool2")(x)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(128, activation="relu", name="features")(x)
    x = layers.Dropout(0.5, name="features_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return _load_own_weights(keras.Model(inputs, outputs, name="bloodmnist_cnn"), weights)


def leaky_cnn(input_size: Size = (128, 128), n_classes: int = 5, weights=None, seed: int | None = None) -> keras.Model:
    """The 4-class WBC study's CNN: four blocks of Conv 3x3 (32, 64, 128, 256), LeakyReLU (slope 0.1),
    BatchNorm, MaxPool; Flatten; Dense 512, 256, 128 (ReLU) with dropout 0.5, 0.4, 0.3; softmax.
    Takes raw 0..255 pixels."""
    _seed(seed)
    inputs = _image_input(input_size)
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, filters in enumerate((32, 64, 128, 256)):
        x = _conv_block(x, filters, 3, f"block{i + 1}", activation="leaky")
    x = layers.Flatten(name="flatten")(x)
    for units, rate, name in ((512, 0.5, "fc1"), (256, 0.4, "fc2"), (128, 0.3, "features")):
        x = layers.Dense(units, activation="relu", name=name)(x)
        x = layers.Dropout(rate, name=f"{name}_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return _load_own_weights(keras.Model(inputs, outputs, name="leaky_cnn"), weights)


def small_cnn(input_size: Size = (96, 96), n_classes: int = 5, weights=None, seed: int | None = None) -> keras.Model:
    """Our sample model (:func:`model_zoo.small_cnn.build_small_cnn`): four Conv/BatchNorm/ReLU/MaxPool
    blocks (16, 32, 64, 96), global average pooling, Dense 64, dropout 0.3, softmax. Takes raw pixels."""
    _seed(seed)
    model = build_small_cnn(_size(input_size), n_classes, seed=0 if seed is None else int(seed))
    return _load_own_weights(model, weights)


# ------------------------------------------------------------------------- heads on ImageNet bases


def _base(application: Callable, input_size, weights, **kwargs) -> tuple[keras.KerasTensor, keras.KerasTensor]:
    """Input and the output of the ``application`` base nested as one layer (frozen when pretrained)."""
    h, w = _size(input_size)
    inputs = _image_input((h, w))
    base = application(include_top=False, weights=weights, input_shape=(h, w, 3), **kwargs)
    if weights is not None:
        base.trainable = False
        return inputs, base(inputs, training=False)
    return inputs, base(inputs)


def vgg16_head(input_size: Size = (224, 224), n_classes: int = 5, weights=None, seed: int | None = None) -> keras.Model:
    """The reference study's transfer model: a VGG16 base (nested, frozen when pretrained), Flatten,
    Dense 200 (ReLU), dropout 0.5, softmax. Expects ``caffe`` input (BGR minus the ImageNet means)."""
    _seed(seed)
    inputs, x = _base(keras.applications.VGG16, input_size, weights)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(200, activation="relu", name="features")(x)
    x = layers.Dropout(0.5, name="features_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="vgg16_head")


def resnet50_head(
    input_size: Size = (224, 224), n_classes: int = 5, weights=None, seed: int | None = None
) -> keras.Model:
    """The reference study's second transfer model: a ResNet50 base (nested, frozen when pretrained),
    Flatten, Dense 150 (ReLU), softmax. Expects ``caffe`` input (BGR minus the ImageNet means)."""
    _seed(seed)
    inputs, x = _base(keras.applications.ResNet50, input_size, weights)
    x = layers.Flatten(name="flatten")(x)
    x = layers.Dense(150, activation="relu", name="features")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="resnet50_head")


def efficientnetb0_head(
    input_size: Size = (224, 224), n_classes: int = 5, weights=None, seed: int | None = None
) -> keras.Model:
    """The BCCD study's model: an EfficientNetB0 base (nested, frozen when pretrained; it rescales
    0..255 pixels itself), global average pooling, then four blocks of Dense (512, 256, 128, 64, ReLU),
    BatchNorm and dropout (0.4, 0.3, 0.3, 0.2); softmax. Takes raw 0..255 pixels."""
    _seed(seed)
    inputs, x = _base(keras.applications.EfficientNetB0, input_size, weights)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    for i, (units, rate) in enumerate(((512, 0.4), (256, 0.3), (128, 0.3), (64, 0.2))):
        name = "features" if i == 3 else f"fc{i + 1}"
        x = layers.Dense(units, activation="relu", name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        x = layers.Dropout(rate, name=f"{name}_dropout")(x)
    outputs = layers.Dense(n_classes, activation="softmax", name="probabilities")(x)
    return keras.Model(inputs, outputs, name="efficientnetb0_head")


# ---------------------------------------------------------------------------------------- registry


def build(
    name: str, input_size=None, n_classes: int | None = None, weights=None, seed: int | None = None
) -> keras.Model:
    """Build architecture ``name`` (defaults: its default input size and class count)."""
    arch = get(name)
    size = arch.default_size if input_size is None else _size(input_size)
    if not arch.fits(size):
        raise ValueError(
            f"{name} needs an input of at least {arch.min_size[0]}x{arch.min_size[1]}, got {size[0]}x{size[1]}"
        )
    return arch.build(size, arch.default_classes if n_classes is None else int(n_classes), weights=weights, seed=seed)
