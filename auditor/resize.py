"""How images reach the model's input size: resize methods named after training loaders, center crops,
channel order, and which decoder a loader used (no TensorFlow here; the ``tf`` family runs in
:mod:`auditor.model`).

A model is only judged fairly on the pixels its training loader produced. :data:`METHODS` is the single
source of truth: each name says its family, the library call it reproduces, the common training code that
makes that call, and the decoder that training code used.

Families
--------
* plain names (``bilinear``, ``area``, ``nearest``, ``bicubic``, ``lanczos``): ``tf.image.resize`` without
  antialiasing, as ``keras.utils.image_dataset_from_directory`` (``bilinear`` is its default and the audit's).
* ``tf:``: ``tf.image.resize(..., antialias=True)`` (``keras.layers.Resizing(antialias=True)``).
* ``pil:``: ``PIL.Image.resize`` on the uint8 image, rounded to uint8, as ``keras.utils.load_img`` and
  ``ImageDataGenerator.flow_from_directory``. PIL's bilinear/bicubic/lanczos/box/hamming filters widen
  their support when shrinking, i.e. they antialias.
* ``cv2:``: ``cv2.resize`` on the uint8 image, rounded to uint8, as OpenCV notebooks.

Decoding: Keras's folder loader decodes with ``tf.io.decode_image``, whose JPEG decoder uses libjpeg's fast
integer DCT; OpenCV and PIL use the accurate one. On the 802 PBC JPEGs OpenCV and PIL agree on every pixel,
TensorFlow differs from both on about 65% of the values (by up to 5 grey levels). So the plain and ``tf:``
families decode JPEGs with TensorFlow, ``pil:`` decodes with PIL and ``cv2:`` with OpenCV.

Crops (applied before the resize):
* ``none``;
* ``center-square``: the largest centered crop with the model input's aspect ratio (a square for square
  inputs), exactly Keras's ``crop_to_aspect_ratio=True`` / ``load_img(keep_aspect_ratio=True)``. For the
  ``pil:`` family it is done as ``load_img`` does it, ``Image.resize(size, box=crop)`` (PIL's filter may
  read pixels just outside the box);
* ``center:F``: keep the central fraction ``F`` in (0, 1] of height and width, as ``tf.image.central_crop``.

Channel order: ``rgb`` (default) or ``bgr`` (``cv2.imread`` without conversion), applied to the resized
pixels before the model's scaling; ``caffe`` scaling flips RGB->BGR itself afterwards, like Keras's
``preprocess_input``, so ``cv2.imread`` + ``vgg16.preprocess_input`` is ``--channels bgr --preprocess caffe``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .errors import input_error

# Library constants as plain numbers, so that importing this module (the CLI does, for validation) loads
# neither OpenCV nor PIL; tests/test_resize.py checks them against cv2.INTER_* and PIL.Image.Resampling.
PIL_NEAREST, PIL_LANCZOS, PIL_BILINEAR, PIL_BICUBIC, PIL_BOX, PIL_HAMMING = 0, 1, 2, 3, 4, 5
CV2_NEAREST, CV2_LINEAR, CV2_CUBIC, CV2_AREA, CV2_LANCZOS4 = 0, 1, 2, 3, 4

FAMILIES = ("plain", "tf", "pil", "cv2")
FAMILY_TITLES = {
    "plain": "plain names (tf.image.resize, no antialias)",
    "tf": "tf: (tf.image.resize, antialias=True)",
    "pil": "pil: (PIL Image.resize, via keras load_img)",
    "cv2": "cv2: (cv2.resize)",
}


@dataclass(frozen=True)
class ResizeMethod:
    """One named way of resizing, and what it reproduces."""

    name: str
    family: str  # plain | tf | pil | cv2
    call: str  # the library call reproduced
    reproduces: str  # the common training code that makes that call
    decoder: str  # tf | pil | cv2: how that training code decoded the files
    kernel: object  # tf method name, PIL resample filter, or cv2 interpolation flag

    @property
    def antialias(self) -> bool:
        return self.family == "tf"


def _m(name, family, call, reproduces, decoder, kernel):
    return name, ResizeMethod(name, family, call, reproduces, decoder, kernel)


_IDD = "keras.utils.image_dataset_from_directory"
METHODS: dict[str, ResizeMethod] = dict(
    [
        _m(
            "bilinear",
            "plain",
            "tf.image.resize(method='bilinear', antialias=False)",
            f"{_IDD} default (interpolation='bilinear'); keras.layers.Resizing default",
            "tf",
            "bilinear",
        ),
        _m("area", "plain", "tf.image.resize(method='area')", f"{_IDD}(interpolation='area')", "tf", "area"),
        _m(
            "nearest", "plain", "tf.image.resize(method='nearest')", f"{_IDD}(interpolation='nearest')", "tf", "nearest"
        ),
        _m(
            "bicubic",
            "plain",
            "tf.image.resize(method='bicubic', antialias=False)",
            f"{_IDD}(interpolation='bicubic')",
            "tf",
            "bicubic",
        ),
        _m(
            "lanczos",
            "plain",
            "tf.image.resize(method='lanczos3', antialias=False)",
            f"{_IDD}(interpolation='lanczos3')",
            "tf",
            "lanczos3",
        ),
        _m(
            "tf:bilinear-aa",
            "tf",
            "tf.image.resize(method='bilinear', antialias=True)",
            "keras.layers.Resizing(interpolation='bilinear', antialias=True) / tf.image.resize(antialias=True)",
            "tf",
            "bilinear",
        ),
        _m(
            "tf:bicubic-aa",
            "tf",
            "tf.image.resize(method='bicubic', antialias=True)",
            "keras.layers.Resizing(interpolation='bicubic', antialias=True)",
            "tf",
            "bicubic",
        ),
        _m(
            "tf:lanczos3-aa",
            "tf",
            "tf.image.resize(method='lanczos3', antialias=True)",
            "keras.layers.Resizing(interpolation='lanczos3', antialias=True)",
            "tf",
            "lanczos3",
        ),
        _m(
            "tf:lanczos5-aa",
            "tf",
            "tf.image.resize(method='lanczos5', antialias=True)",
            "keras.layers.Resizing(interpolation='lanczos5', antialias=True)",
            "tf",
            "lanczos5",
        ),
        _m(
            "tf:gaussian-aa",
            "tf",
            "tf.image.resize(method='gaussian', antialias=True)",
            "tf.image.resize(method='gaussian', antialias=True)",
            "tf",
            "gaussian",
        ),
        _m(
            "tf:mitchellcubic-aa",
            "tf",
            "tf.image.resize(method='mitchellcubic', antialias=True)",
            "tf.image.resize(method='mitchellcubic', antialias=True)",
            "tf",
            "mitchellcubic",
        ),
        _m(
            "pil:nearest",
            "pil",
            "PIL Image.resize(resample=NEAREST)",
            "ImageDataGenerator.flow_from_directory default ('nearest'); keras.utils.load_img default "
            "(interpolation='nearest')",
            "pil",
            PIL_NEAREST,
        ),
        _m(
            "pil:bilinear",
            "pil",
            "PIL Image.resize(resample=BILINEAR)",
            "keras.utils.load_img(interpolation='bilinear') / flow_from_directory(interpolation='bilinear')",
            "pil",
            PIL_BILINEAR,
        ),
        _m(
            "pil:bicubic",
            "pil",
            "PIL Image.resize(resample=BICUBIC)",
            "keras.utils.load_img(interpolation='bicubic') / flow_from_directory(interpolation='bicubic')",
            "pil",
            PIL_BICUBIC,
        ),
        _m(
            "pil:lanczos",
            "pil",
            "PIL Image.resize(resample=LANCZOS)",
            "keras.utils.load_img(interpolation='lanczos') / flow_from_directory(interpolation='lanczos')",
            "pil",
            PIL_LANCZOS,
        ),
        _m(
            "pil:box",
            "pil",
            "PIL Image.resize(resample=BOX)",
            "keras.utils.load_img(interpolation='box') / flow_from_directory(interpolation='box')",
            "pil",
            PIL_BOX,
        ),
        _m(
            "pil:hamming",
            "pil",
            "PIL Image.resize(resample=HAMMING)",
            "keras.utils.load_img(interpolation='hamming') / flow_from_directory(interpolation='hamming')",
            "pil",
            PIL_HAMMING,
        ),
        _m(
            "cv2:nearest",
            "cv2",
            "cv2.resize(interpolation=INTER_NEAREST)",
            "cv2.resize(..., INTER_NEAREST)",
            "cv2",
            CV2_NEAREST,
        ),
        _m(
            "cv2:linear",
            "cv2",
            "cv2.resize(interpolation=INTER_LINEAR)",
            "cv2.resize default INTER_LINEAR",
            "cv2",
            CV2_LINEAR,
        ),
        _m("cv2:area", "cv2", "cv2.resize(interpolation=INTER_AREA)", "cv2.resize(..., INTER_AREA)", "cv2", CV2_AREA),
        _m(
            "cv2:cubic",
            "cv2",
            "cv2.resize(interpolation=INTER_CUBIC)",
            "cv2.resize(..., INTER_CUBIC)",
            "cv2",
            CV2_CUBIC,
        ),
        _m(
            "cv2:lanczos4",
            "cv2",
            "cv2.resize(interpolation=INTER_LANCZOS4)",
            "cv2.resize(..., INTER_LANCZOS4)",
            "cv2",
            CV2_LANCZOS4,
        ),
    ]
)
RESIZE_NAMES = tuple(METHODS)
PLAIN_NAMES = tuple(n for n, m in METHODS.items() if m.family == "plain")
DEFAULT_RESIZE = "bilinear"  # keras.utils.image_dataset_from_directory, bit for bit
CHANNELS = ("rgb", "bgr")
DEFAULT_CHANNELS = "rgb"
CROP_FORMS = ("none", "center-square", "center:FRACTION")
DEFAULT_CROP = "none"


def methods_by_family() -> dict[str, tuple[str, ...]]:
    return {f: tuple(n for n, m in METHODS.items() if m.family == f) for f in FAMILIES}


def resize_choices_text() -> str:
    """Every family and its methods, for error messages and --help."""
    return "; ".join(f"{FAMILY_TITLES[f]}: {', '.join(names)}" for f, names in methods_by_family().items())


# ------------------------------------------------------------------------------ validation


def check_resize(value: str, subject: str) -> str:
    if value not in METHODS:
        raise input_error(subject, f"unknown resize method {value!r}", expected="one of " + resize_choices_text())
    return value


def parse_crop(value: str) -> float | None:
    """None for ``none``, 0.0 for ``center-square``, the fraction for ``center:F``; ValueError otherwise."""
    if value == "none":
        return None
    if value == "center-square":
        return 0.0
    if value.startswith("center:"):
        frac = float(value[len("center:") :])  # ValueError for non-numbers
        if not 0 < frac <= 1:
            raise ValueError(f"fraction {frac} is outside (0, 1]")
        return frac
    raise ValueError("unknown crop")


def check_crop(value: str, subject: str) -> str:
    try:
        parse_crop(value)
    except ValueError:
        raise input_error(
            subject,
            f"unknown crop {value!r}",
            expected="none, center-square, or center:FRACTION with FRACTION in (0, 1], e.g. center:0.56",
        ) from None
    return value


def check_channels(value: str, subject: str) -> str:
    if value not in CHANNELS:
        raise input_error(subject, f"unknown channel order {value!r}", expected="one of " + ", ".join(CHANNELS))
    return value


# ------------------------------------------------------------------------------ geometry


def crop_box(height: int, width: int, crop: str, target: tuple[int, int]) -> tuple[int, int, int, int]:
    """(top, left, crop_height, crop_width) of ``crop`` on an image of ``height`` x ``width``.

    ``center-square`` follows Keras's ``smart_resize`` / ``load_img(keep_aspect_ratio=True)``; ``center:F``
    follows ``tf.image.central_crop``.
    """
    frac = parse_crop(crop)
    if frac is None:
        return 0, 0, height, width
    if frac == 0.0:
        th, tw = target
        ch = max(min(height, (width * th) // tw), 1)
        cw = max(min(width, (height * tw) // th), 1)
        return (height - ch) // 2, (width - cw) // 2, ch, cw
    top = int((height - height * frac) / 2)
    left = int((width - width * frac) / 2)
    return top, left, height - 2 * top, width - 2 * left


def crop_image(img: np.ndarray, crop: str, target: tuple[int, int]) -> np.ndarray:
    """A view of ``img`` cropped by ``crop`` (no copy)."""
    top, left, ch, cw = crop_box(img.shape[0], img.shape[1], crop, target)
    return img[top : top + ch, left : left + cw]


# ------------------------------------------------------------------------------ PIL and OpenCV resizers


def resize_pil(img: np.ndarray, target: tuple[int, int], method: ResizeMethod, crop: str = "none") -> np.ndarray:
    """uint8 RGB -> uint8 RGB of ``target`` (height, width), as ``keras.utils.load_img`` does it."""
    from PIL import Image

    h, w = target
    pil = Image.fromarray(img)
    if pil.size == (w, h):  # load_img leaves an image of the target size alone (crop included)
        return img
    if crop == "center-square":
        # load_img(keep_aspect_ratio=True)'s own arithmetic: unlike smart_resize it does not keep at least
        # one row/column, so for a 1-pixel-wide image the box is empty and PIL decides what comes out
        height, width = img.shape[:2]
        ch, cw = min(height, (width * h) // w), min(width, (height * w) // h)
        top, left = (height - ch) // 2, (width - cw) // 2
        return np.asarray(pil.resize((w, h), method.kernel, box=(left, top, left + cw, top + ch)))
    if crop != "none":
        pil = Image.fromarray(np.ascontiguousarray(crop_image(img, crop, target)))
        if pil.size == (w, h):
            return np.asarray(pil)
    return np.asarray(pil.resize((w, h), method.kernel))


def resize_cv2(img: np.ndarray, target: tuple[int, int], method: ResizeMethod, crop: str = "none") -> np.ndarray:
    """uint8 -> uint8 of ``target`` (height, width): crop, then ``cv2.resize``."""
    import cv2

    h, w = target
    src = crop_image(img, crop, target) if crop != "none" else img
    return cv2.resize(src, (w, h), interpolation=method.kernel)


def resize_uint8(
    images: Sequence[np.ndarray], out: np.ndarray, target: tuple[int, int], method: ResizeMethod, crop: str = "none"
) -> None:
    """Resize uint8 images one by one with PIL or OpenCV into the float32 array ``out`` (n, h, w, 3)."""
    fn = resize_pil if method.family == "pil" else resize_cv2
    for i, img in enumerate(images):
        out[i] = fn(img, target, method, crop)
