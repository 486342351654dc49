"""Pixel scalings a model may expect (pure numpy, no TensorFlow).

All take float32 RGB images in [0, 255] of shape (n, h, w, 3) (or (n, h, w, 1) for grayscale models):

* ``unit``: x / 255, in [0, 1]
* ``raw``: x unchanged, in [0, 255] (models that start with their own Rescaling layer)
* ``symmetric``: x / 127.5 - 1, in [-1, 1] (MobileNet/Inception/EfficientNetV2 convention)
* ``caffe``: RGB -> BGR, then minus the ImageNet channel means (VGG16/ResNet50 ``preprocess_input``)
* ``torch``: x / 255, then minus the ImageNet mean and divided by its std per RGB channel (DenseNet's
  ``preprocess_input``, and what most PyTorch-trained pipelines use)
"""

from __future__ import annotations

import numpy as np

SCALINGS = ("unit", "raw", "symmetric", "caffe", "torch")
CAFFE_MEAN_BGR = np.array([103.939, 116.779, 123.68], dtype=np.float32)
TORCH_MEAN_RGB = np.array([0.485, 0.456, 0.406], dtype=np.float32)
TORCH_STD_RGB = np.array([0.229, 0.224, 0.225], dtype=np.float32)


def scale_pixels(x: np.ndarray, scaling: str) -> np.ndarray:
    """Apply one of :data:`SCALINGS` to float pixels in [0, 255]; returns a new float32 array."""
    x = np.asarray(x, dtype=np.float32)
    if scaling == "unit":
        return x / np.float32(255.0)
    if scaling == "raw":
        return x.copy()
    if scaling == "symmetric":
        return x / np.float32(127.5) - np.float32(1.0)
    if scaling == "caffe":
        if x.shape[-1] == 3:
            return x[..., ::-1] - CAFFE_MEAN_BGR
        return x - np.float32(CAFFE_MEAN_BGR.mean())
    if scaling == "torch":
        x = x / np.float32(255.0)
        if x.shape[-1] == 3:
            return (x - TORCH_MEAN_RGB) / TORCH_STD_RGB
        return (x - np.float32(TORCH_MEAN_RGB.mean())) / np.float32(TORCH_STD_RGB.mean())
    raise ValueError(f"unknown scaling {scaling!r}")
