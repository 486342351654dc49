"""keras.applications families and the pixel scaling each one expects (pure Python, no TensorFlow).

A family is recognised from a model's layer names (``layer_cues``: every pattern must match at least
one layer name; these names are fixed inside keras.applications, so they survive a renamed base and a
base built flat into the user's model) or, failing that, from the base model's own name
(``name_pattern``: the default names keras.applications gives, e.g. ``mobilenetv2_0.35_96``).

``scaling`` is what the family's ``keras.applications.<module>.preprocess_input`` does:

* ``caffe``: ``mode="caffe"`` (VGG16/19, ResNet50/101/152)
* ``symmetric``: ``mode="tf"``, x / 127.5 - 1 (ResNetV2, InceptionV3, InceptionResNetV2, Xception,
  MobileNet, MobileNetV2, NASNet)
* ``torch``: ``mode="torch"`` (DenseNet)
* ``raw``: ``preprocess_input`` is the identity because the base holds its own preprocessing layers
  (EfficientNet always; EfficientNetV2, MobileNetV3 and ConvNeXt with ``include_preprocessing=True``,
  their default). For those built with ``include_preprocessing=False`` the base has no such layer and
  expects what its documentation says instead (``without_layers``): [-1, 1] for MobileNetV3 and
  EfficientNetV2, ImageNet mean/std (``torch``, the normalisation the omitted layer applies) for ConvNeXt.

Keras 3 has no RegNet application (it was dropped from keras.applications with Keras 3), so it has
no entry here.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Family:
    name: str  # e.g. "MobileNetV2"
    module: str  # keras.applications.<module> holding its preprocess_input
    scaling: str  # what preprocess_input does (raw: identity, the base preprocesses itself)
    name_pattern: str  # regular expression on the base model's name (case-insensitive, whole name)
    layer_cues: tuple[str, ...]  # regular expressions; each must match a whole layer name
    without_layers: str | None = None  # scaling when a raw family lacks its own preprocessing layers


FAMILIES: tuple[Family, ...] = (
    Family("VGG", "vgg16", "caffe", r"vgg1[69]", ("block1_conv1", "block1_pool", "block5_conv3")),
    Family("ResNet", "resnet", "caffe", r"resnet(50|101|152)", ("conv1_bn", "conv2_block1_0_conv", "conv2_block1_add")),
    Family(
        "ResNetV2",
        "resnet_v2",
        "symmetric",
        r"resnet(50|101|152)v2",
        ("conv1_conv", "conv2_block1_preact_bn", "post_bn"),
    ),
    Family(
        "DenseNet", "densenet", "torch", r"densenet(121|169|201)", ("conv1_conv", "conv2_block1_concat", "pool2_conv")
    ),
    Family("InceptionV3", "inception_v3", "symmetric", r"inception_v3", ("mixed0", "mixed5", "mixed10")),
    Family(
        "InceptionResNetV2",
        "inception_resnet_v2",
        "symmetric",
        r"inception_resnet_v2",
        ("mixed_5b", "block35_1_mixed", "conv_7b"),
    ),
    Family(
        "Xception", "xception", "symmetric", r"xception", ("block1_conv1_bn", "block2_sepconv1", "block14_sepconv2")
    ),
    Family("MobileNet", "mobilenet", "symmetric", r"mobilenet_\d+(\.\d+)?_\d+", ("conv1", "conv_dw_1", "conv_pw_1")),
    Family(
        "MobileNetV2",
        "mobilenet_v2",
        "symmetric",
        r"mobilenetv2_\d+(\.\d+)?_\d+",
        ("Conv1", "bn_Conv1", "expanded_conv_depthwise", "block_1_expand"),
    ),
    Family(
        "MobileNetV3",
        "mobilenet_v3",
        "raw",
        r"mobilenet_?v3_?(small|large)",
        ("conv", "conv_bn", "expanded_conv_depthwise_bn", "expanded_conv_project_bn"),
        "symmetric",
    ),
    Family(
        "NASNet", "nasnet", "symmetric", r"nasnet(_mobile|_large)?", ("stem_conv1", "stem_bn1", r"normal_concat_\w+")
    ),
    Family("EfficientNet", "efficientnet", "raw", r"efficientnetb[0-7]", ("stem_conv", "block1a_dwconv", "top_conv")),
    Family(
        "EfficientNetV2",
        "efficientnet_v2",
        "raw",
        r"efficientnetv2-(b[0-3]|s|m|l)",
        ("stem_conv", "block1a_project_activation", "top_conv"),
        "symmetric",
    ),
    Family(
        "ConvNeXt",
        "convnext",
        "raw",
        r"convnext(_tiny|_small|_base|_large|_xlarge)?",
        (r".+_stage_0_block_0_depthwise_conv", r".+_stage_0_block_0_layer_scale"),
        "torch",
    ),
)

BY_NAME = {f.name: f for f in FAMILIES}


def families_by_layers(layer_names: Iterable[str]) -> list[Family]:
    """Every family whose layer cues all match some layer name (the tests require at most one)."""
    names = list(layer_names)
    found = []
    for fam in FAMILIES:
        if all(any(re.fullmatch(cue, n) for n in names) for cue in fam.layer_cues):
            found.append(fam)
    return found


def family_by_layers(layer_names: Iterable[str]) -> Family | None:
    found = families_by_layers(layer_names)
    return found[0] if found else None


def family_by_name(model_name: str) -> Family | None:
    """The family whose default keras.applications model name this is, if any."""
    for fam in FAMILIES:
        if re.fullmatch(fam.name_pattern, model_name, flags=re.IGNORECASE):
            return fam
    return None


def family_scaling(fam: Family, *, has_own_preprocessing: bool) -> str:
    """The scaling a base of ``fam`` expects, given whether it holds its own preprocessing layers."""
    if fam.scaling == "raw" and not has_own_preprocessing and fam.without_layers:
        return fam.without_layers
    return fam.scaling
