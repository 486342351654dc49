"""A small Keras CNN for 96x96 RGB white-blood-cell images that takes raw 0..255 pixels."""

from __future__ import annotations

import keras
from keras import layers

#: Name of the penultimate (feature) layer, for analyses that need embeddings.
FEATURE_LAYER = "features"


def build_small_cnn(
    input_size: tuple[int, int] = (96, 96),
    n_classes: int = 5,
    seed: int = 0,
    *,
    widths: tuple[int, ...] = (16, 32, 64, 96),
    hidden: int = 64,
    dropout: float = 0.3,
) -> keras.Model:
    """Build (not train) the small CNN.

    Layout: Input(raw 0..255 RGB) -> Rescaling(1/255) -> [Conv3x3 -> BatchNorm -> ReLU -> MaxPool] per
    width -> GlobalAveragePooling -> Dense(hidden, relu, name="features") -> Dropout -> Dense(softmax).
    ``seed`` fixes the weight initialisation.
    """
    h, w = int(input_size[0]), int(input_size[1])
    init = lambda i: keras.initializers.HeNormal(seed=seed * 1000 + i)  # noqa: E731
    inputs = keras.Input(shape=(h, w, 3), name="image")
    x = layers.Rescaling(1.0 / 255.0, name="rescale")(inputs)
    for i, width in enumerate(widths):
        x = layers.Conv2D(width, 3, padding="same", use_bias=False, kernel_initializer=init(i), name=f"conv{i + 1}")(x)
        x = layers.BatchNormalization(momentum=0.9, name=f"bn{i + 1}")(x)
        x = layers.Activation("relu", name=f"relu{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"pool{i + 1}")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dense(hidden, activation="relu", kernel_initializer=init(100), name=FEATURE_LAYER)(x)
    x = layers.Dropout(dropout, seed=seed, name="dropout")(x)
    outputs = layers.Dense(
        n_classes,
        activation="softmax",
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed * 1000 + 101),
        name="probabilities",
    )(x)
    return keras.Model(inputs, outputs, name="small_cnn")
