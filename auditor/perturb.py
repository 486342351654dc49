"""Image perturbations at five severities (numpy + OpenCV, no TensorFlow), after ImageNet-C and MedMNIST-C.

Every perturbation takes one RGB image as float32 in [0, 1] at the model's input resolution (after the
audit's crop and resize, before the model's own scaling) and returns a new one, clipped to [0, 1].
Severity 0 returns the image unchanged (the identity, exactly); severities 1 to 5 apply the parameters of
:data:`PERTURBATIONS`. Parameters that depend on image size (blur sigma, motion length, pixel block,
deposit and bubble radii) are fractions of the image's shorter side, so a 28-pixel and a 360-pixel image
suffer comparable damage at one severity; :func:`parameter` gives the value in pixels at a given size.

Random perturbations (noise, motion direction, stain-shift direction, rotation sign, deposit and bubble
positions) draw from a generator seeded by the audit seed, the image's content hash and the perturbation's
name, never by the image's position in a batch: the same image gets the same pixels whatever the batch size
or order. All five severities of one perturbation share the draws (the same noise pattern, scaled; the same
deposits, more of them), so damage grows with severity on every image.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import cv2
import numpy as np

SEVERITIES = (1, 2, 3, 4, 5)


@dataclass(frozen=True)
class Perturbation:
    """One kind of damage: its parameter at severities 1..5 and at the identity (severity 0)."""

    name: str
    label: str  # for tables and figures
    parameter: str  # what the values measure
    unit: str  # "px" when the value is a fraction of the shorter side (converted with the image size)
    values: tuple[float, float, float, float, float]
    identity: float  # the parameter's value that leaves the image unchanged
    what: str  # one line: what it imitates and how
    apply: Callable[[np.ndarray, float, np.random.Generator], np.ndarray]

    @property
    def relative(self) -> bool:
        return self.unit == "px"


def _short_side(img: np.ndarray) -> int:
    return min(img.shape[0], img.shape[1])


def _gaussian_noise(img, sigma, rng):
    noise = rng.standard_normal(img.shape, dtype=np.float32)
    return img + np.float32(sigma) * noise


def _defocus(img, frac, rng):
    sigma = frac * _short_side(img)
    return cv2.GaussianBlur(img, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_REFLECT_101)


def _motion(img, frac, rng):
    length = frac * _short_side(img)
    angle = rng.uniform(0.0, np.pi)
    k = int(np.ceil(length)) | 1
    k = max(k, 3)
    # a line of the given length through the kernel's centre, sampled finely and splatted bilinearly
    kernel = np.zeros((k, k), np.float32)
    c = (k - 1) / 2.0
    for t in np.linspace(-length / 2, length / 2, max(8, int(length * 8))):
        x, y = c + t * np.cos(angle), c + t * np.sin(angle)
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        fx, fy = x - x0, y - y0
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            if 0 <= x0 + dx < k and 0 <= y0 + dy < k:
                kernel[y0 + dy, x0 + dx] += wgt
    kernel /= kernel.sum()
    return cv2.filter2D(img, -1, kernel, borderType=cv2.BORDER_REFLECT_101)


def _brightness_up(img, delta, rng):
    return img + np.float32(delta)


def _brightness_down(img, factor, rng):
    return img * np.float32(factor)


def _contrast(img, factor, rng):
    mean = img.mean(dtype=np.float64)
    return (img - np.float32(mean)) * np.float32(factor) + np.float32(mean)


def _jpeg(img, quality, rng):
    u8 = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(u8, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:  # pragma: no cover - OpenCV always encodes a uint8 RGB array
        raise RuntimeError("JPEG encoding failed")
    out = cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    return out.astype(np.float32) / np.float32(255.0)


def _pixelate(img, block_frac, rng):
    h, w = img.shape[:2]
    block = max(1.0, block_frac * _short_side(img))
    small = (max(1, int(round(w / block))), max(1, int(round(h / block))))
    low = cv2.resize(img, small, interpolation=cv2.INTER_AREA)
    return cv2.resize(low, (w, h), interpolation=cv2.INTER_NEAREST)


_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def _saturation(img, factor, rng):
    grey = (img @ _LUMA)[..., None]
    return grey + (img - grey) * np.float32(factor)


# Ruifrok and Johnston's haematoxylin-eosin-DAB stain vectors (as scikit-image's rgb_from_hed), rows = stains
_RGB_FROM_HED = np.array([[0.65, 0.70, 0.29], [0.07, 0.99, 0.11], [0.27, 0.57, 0.78]], np.float64)
_RGB_FROM_HED /= np.linalg.norm(_RGB_FROM_HED, axis=1, keepdims=True)
_HED_FROM_RGB = np.linalg.inv(_RGB_FROM_HED)
_OD_FLOOR = 1.0 / 255.0


def _stain(img, strength, rng):
    od = -np.log(np.maximum(img.astype(np.float64), _OD_FLOOR))  # optical density per channel
    conc = od.reshape(-1, 3) @ _HED_FROM_RGB  # stain concentrations (H, E, D)
    signs = rng.choice([-1.0, 1.0], size=2)  # each image: haematoxylin and eosin each stronger or weaker
    share = rng.uniform(0.5, 1.0, size=2)  # ... by a share of the strength
    scale = np.array([1.0 + signs[0] * share[0] * strength, 1.0 + signs[1] * share[1] * strength, 1.0])
    od2 = (conc * scale) @ _RGB_FROM_HED
    return np.exp(-od2).reshape(img.shape).astype(np.float32)


def _rotate(img, degrees, rng):
    angle = float(degrees) * (1.0 if rng.random() < 0.5 else -1.0)
    h, w = img.shape[:2]
    if h == w and float(degrees) % 90 == 0:  # an exact pixel permutation: no interpolation
        return np.ascontiguousarray(np.rot90(img, k=int(round(angle / 90)) % 4))
    m = cv2.getRotationMatrix2D(((w - 1) / 2.0, (h - 1) / 2.0), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


_MAX_DEPOSITS = 24


def _box(cy: float, cx: float, radius: float, h: int, w: int) -> tuple[slice, slice]:
    """Rows and columns of the pixels within ``radius`` of (cy, cx) (a margin of 2 pixels more), clipped."""
    y0, y1 = max(0, int(np.floor(cy - radius)) - 2), min(h, int(np.ceil(cy + radius)) + 3)
    x0, x1 = max(0, int(np.floor(cx - radius)) - 2), min(w, int(np.ceil(cx + radius)) + 3)
    return slice(y0, max(y0, y1)), slice(x0, max(x0, x1))


def _deposit(img, count, rng):
    """Stain deposit (precipitate): small dark purple specks with soft edges, scattered over the slide.

    Each speck is computed only within its bounding box: outside ``r + max(1, r / 2)`` of its centre its
    alpha is exactly 0, so the pixels equal a whole-image computation's bit for bit."""
    h, w = img.shape[:2]
    side = _short_side(img)
    ys, xs = rng.uniform(0, h, _MAX_DEPOSITS), rng.uniform(0, w, _MAX_DEPOSITS)
    radii = rng.uniform(0.012, 0.035, _MAX_DEPOSITS) * side
    alpha = np.zeros((h, w), np.float64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    for i in range(int(count)):
        r = max(radii[i], 0.6)
        soft = max(1.0, 0.5 * r)
        by, bx = _box(ys[i], xs[i], r + soft, h, w)
        d = np.sqrt((yy[by, bx] - ys[i]) ** 2 + (xx[by, bx] - xs[i]) ** 2)
        alpha[by, bx] = np.maximum(alpha[by, bx], np.clip(1.0 - (d - r) / soft, 0.0, 1.0))
    colour = np.array([0.28, 0.12, 0.36], np.float32)  # dark violet, as precipitated Giemsa/Wright stain
    a = 0.85 * alpha[..., None]
    return img * (1 - a) + colour * a


#: beyond this many radii from a bubble's centre its rim term exp(-((d - 1) / 0.06) ** 2) underflows to exactly
#: 0 in float64 (the exponent is below -745.2 once |d - 1| > 1.638), and its disc is 0 too
_BUBBLE_REACH = 2.7


def _bubble(img, count, rng):
    """Air bubble: a disc that refracts (slight blur and brightening inside) with a dark rim.

    Each bubble is computed only within ``_BUBBLE_REACH`` radii of its centre, where its terms are not exactly
    0: the pixels equal a whole-image computation's bit for bit."""
    h, w = img.shape[:2]
    side = _short_side(img)
    out = img.astype(np.float64)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    centres = rng.uniform(0.15, 0.85, (5, 2)) * np.array([h, w])
    radii = rng.uniform(0.14, 0.24, 5) * side
    blurred = cv2.GaussianBlur(img, (0, 0), sigmaX=max(0.5, 0.02 * side), borderType=cv2.BORDER_REFLECT_101)
    for i in range(int(count)):
        by, bx = _box(centres[i, 0], centres[i, 1], _BUBBLE_REACH * radii[i], h, w)
        d = np.sqrt((yy[by, bx] - centres[i, 0]) ** 2 + (xx[by, bx] - centres[i, 1]) ** 2) / radii[i]
        inside = np.clip((1.0 - d) * 8.0, 0.0, 1.0)[..., None]  # soft-edged disc
        rim = np.exp(-(((d - 1.0) / 0.06) ** 2))[..., None]  # thin dark ring at the edge
        light = blurred[by, bx] * 0.85 + 0.15  # brighter, lower contrast inside
        o = out[by, bx] * (1 - inside) + light * inside
        out[by, bx] = o * (1 - 0.6 * rim) + 0.25 * 0.6 * rim
    return out


PERTURBATIONS: dict[str, Perturbation] = {
    p.name: p
    for p in (
        Perturbation(
            "gaussian_noise",
            "Gaussian noise",
            "noise sigma",
            "",
            (0.02, 0.04, 0.06, 0.09, 0.13),
            0.0,
            "sensor noise: independent normal noise added to every pixel and channel",
            _gaussian_noise,
        ),
        Perturbation(
            "defocus_blur",
            "Defocus blur",
            "blur sigma",
            "px",
            (0.006, 0.012, 0.02, 0.03, 0.045),
            0.0,
            "misfocus: Gaussian blur",
            _defocus,
        ),
        Perturbation(
            "motion_blur",
            "Motion blur",
            "motion length",
            "px",
            (0.02, 0.04, 0.065, 0.095, 0.13),
            0.0,
            "stage or camera movement: a line kernel at a random direction",
            _motion,
        ),
        Perturbation(
            "brightness_up",
            "Brightness up",
            "added brightness",
            "",
            (0.05, 0.1, 0.16, 0.23, 0.3),
            0.0,
            "over-exposure: a constant added to every pixel",
            _brightness_up,
        ),
        Perturbation(
            "brightness_down",
            "Brightness down",
            "intensity factor",
            "",
            (0.9, 0.8, 0.68, 0.55, 0.42),
            1.0,
            "dim illumination: every pixel multiplied by a factor below 1",
            _brightness_down,
        ),
        Perturbation(
            "contrast_down",
            "Contrast down",
            "contrast factor",
            "",
            (0.8, 0.65, 0.5, 0.36, 0.24),
            1.0,
            "flat illumination: pixels pulled towards the image mean",
            _contrast,
        ),
        Perturbation(
            "jpeg",
            "JPEG compression",
            "JPEG quality",
            "",
            (70, 45, 28, 16, 8),
            100,
            "compressed uploads: an OpenCV JPEG round trip",
            _jpeg,
        ),
        Perturbation(
            "pixelate",
            "Pixelation",
            "pixel block",
            "px",
            (0.02, 0.03, 0.045, 0.065, 0.09),
            0.0,
            "resolution loss: area-downsampled by the block size, then enlarged with nearest neighbours",
            _pixelate,
        ),
        Perturbation(
            "saturation",
            "Saturation down",
            "saturation factor",
            "",
            (0.8, 0.6, 0.45, 0.3, 0.15),
            1.0,
            "faded stain: colours pulled towards their grey (luma) value",
            _saturation,
        ),
        Perturbation(
            "stain_shift",
            "Stain shift",
            "stain change",
            "",
            (0.1, 0.2, 0.32, 0.46, 0.6),
            0.0,
            "stain batch variability: haematoxylin and eosin concentrations (HED colour deconvolution, "
            "Ruifrok-Johnston vectors) each scaled up or down by 50-100 % of the value, direction random",
            _stain,
        ),
        Perturbation(
            "rotation",
            "Rotation",
            "rotation angle",
            "",
            (10, 20, 35, 60, 90),
            0.0,
            "cells lie at any orientation: rotation about the centre, direction random, border reflected "
            "(90 degrees on a square input is an exact pixel permutation)",
            _rotate,
        ),
        Perturbation(
            "stain_deposit",
            "Stain deposit",
            "dark specks",
            "",
            (2, 4, 7, 11, 16),
            0.0,
            "precipitated stain on the slide (after MedMNIST-C): dark violet specks of radius 1.2-3.5 % of the side",
            _deposit,
        ),
        Perturbation(
            "bubble",
            "Bubble",
            "air bubbles",
            "",
            (1, 2, 3, 4, 5),
            0.0,
            "air bubbles under the coverslip (after MedMNIST-C): bright, slightly blurred discs with a dark rim, "
            "radius 14-24 % of the side",
            _bubble,
        ),
    )
}
NAMES = tuple(PERTURBATIONS)


def parameter(name: str, severity: int, size: tuple[int, int] | int) -> float:
    """The parameter of ``name`` at ``severity`` for an image of ``size`` (h, w) or shorter side: in pixels
    for size-relative parameters."""
    p = PERTURBATIONS[name]
    value = p.identity if severity == 0 else p.values[severity - 1]
    if p.relative:
        side = size if isinstance(size, int) else min(size)
        return float(value) * side
    return float(value)


def describe(name: str, value: float, size: tuple[int, int] | int) -> str:
    """'blur sigma 1.3 px at 96 px input', 'JPEG quality 31', 'rotation angle 12 degrees'."""
    p = PERTURBATIONS[name]
    side = size if isinstance(size, int) else min(size)
    if p.relative:
        return f"{p.parameter} {value:.1f} px at {side} px input"
    if name == "rotation":
        return f"{p.parameter} {value:.0f} degrees"
    if name in ("jpeg", "stain_deposit", "bubble"):
        return f"{p.parameter} {value:.0f}"
    if name == "stain_shift":
        return f"{p.parameter} {value:.0%}"
    return f"{p.parameter} {value:.3f}"


def image_key(content: bytes | str | np.ndarray) -> int:
    """A 64-bit key of an image: from its content hash (hex string), or hashed from bytes/pixels."""
    if isinstance(content, str):
        return int(content[:16], 16)
    data = content.tobytes() if isinstance(content, np.ndarray) else content
    return int(hashlib.sha256(data).hexdigest()[:16], 16)


def _rng(name: str, key: int, seed: int) -> np.random.Generator:
    salt = int(hashlib.sha256(name.encode()).hexdigest()[:8], 16)
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, key & 0xFFFFFFFF, key >> 32, salt])


def perturb_image(image: np.ndarray, name: str, severity: int, *, key: int, seed: int) -> np.ndarray:
    """One image (h, w, 3) float in [0, 1] -> the perturbed image (float32, [0, 1]); severity 0 is the identity
    (the same values, as float32)."""
    if name not in PERTURBATIONS:
        raise ValueError(f"unknown perturbation {name!r}; known: {', '.join(NAMES)}")
    if severity == 0:
        return np.asarray(image, dtype=np.float32).copy()
    if severity not in SEVERITIES:
        raise ValueError(f"severity {severity} is not one of 0..5")
    p = PERTURBATIONS[name]
    img = np.ascontiguousarray(image, dtype=np.float32)
    out = p.apply(img, p.values[severity - 1], _rng(name, key, seed))
    return np.clip(out, 0.0, 1.0).astype(np.float32, copy=False)


def perturb_batch(images: np.ndarray, name: str, severity: int, *, keys: Sequence[int], seed: int) -> np.ndarray:
    """A batch (n, h, w, 3) in [0, 1] -> perturbed batch; each image is seeded by its own key."""
    images = np.asarray(images, dtype=np.float32)
    if len(keys) != len(images):
        raise ValueError(f"{len(keys)} keys for {len(images)} images")
    out = np.empty_like(images)
    for i, (img, key) in enumerate(zip(images, keys)):
        out[i] = perturb_image(img, name, severity, key=key, seed=seed)
    return out


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio (dB) of two images in [0, 1]; inf when equal."""
    mse = float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(1.0 / mse)
