"""Deterministic synthetic white-blood-cell (WBC) images, drawn with numpy and OpenCV only.

Each image shows one leukocyte near the centre of a field of pink/salmon red blood cells, rendered the
way a stained blood smear is seen under a bright-field microscope: every structure carries an amount
of one or more *stains* (optical densities), and the picture is the light of the lamp attenuated by
them (Beer-Lambert law). Four stain colours are used:

* ``azure`` - purple, binds nuclei (chromatin) and basophil granules;
* ``blue`` - methylene blue, the pale blue of basophilic cytoplasm (lymphocytes, monocytes);
* ``eosin`` - pink/salmon, red blood cells and the faint pink of neutrophil cytoplasm;
* ``orange`` - the orange-red of eosinophil granules.

A :class:`SiteStyle` describes one laboratory (stain batch, microscope magnification, focus, lamp);
the default is our internal site. ``stain_shift`` moves the stain colours and the lamp colour away from
the default continuously (0 = none, 1 = a clearly different laboratory, 2 = extreme).

Everything is deterministic: image ``i`` of class ``c`` for seed ``s`` is drawn from a random
generator seeded with ``(s, crc32(c), i)``, so it does not depend on how many other images were asked
for, in which order, or for which other classes.
"""

from __future__ import annotations

import json
import math
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np

GENERATOR_VERSION = "1.0.0"

#: The five classes, sorted (the order Keras gives folder names).
CLASS_NAMES: tuple[str, ...] = ("basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil")

_SS = 2  # supersampling factor: drawing happens at _SS * size, then is area-downsampled

# Stain absorption vectors (optical density per unit of stain, for R, G, B).
_AZURE = np.array([0.55, 0.85, 0.30], np.float32)
_BLUE = np.array([0.80, 0.42, 0.06], np.float32)
_EOSIN = np.array([0.08, 0.42, 0.42], np.float32)
_ORANGE = np.array([0.07, 0.52, 0.88], np.float32)
_LAMP = np.array([238.0, 232.0, 229.0], np.float32)  # empty background (plasma + glass), RGB

# Direction of drift per unit of stain_shift (added to the vectors above; eosin is also weakened).
_AZURE_DRIFT = np.array([0.22, -0.12, 0.12], np.float32)  # nuclei turn blue / navy
_BLUE_DRIFT = np.array([0.05, 0.18, 0.05], np.float32)  # cytoplasm turns greyer
_EOSIN_DRIFT = np.array([0.02, -0.05, 0.06], np.float32)  # pink turns tan / orange, paler
_LAMP_DRIFT = np.array([-14.0, -2.0, 10.0], np.float32)  # cooler (bluish) light


@dataclass(frozen=True)
class SiteStyle:
    """How the images of one laboratory look. The default is our internal site.

    stain_shift: 0 = default stain; larger values drift hue and saturation of the whole stain (and the
        lamp colour) continuously: 0.5 noticeable, 1 clearly another laboratory, 2 extreme.
    scale: magnification factor of cells (1 = default; 1.2 = cells 20 % larger).
    blur: extra optical (Gaussian) blur sigma in output pixels (0 = in focus).
    brightness: multiplies the lamp intensity (1 = default).
    """

    stain_shift: float = 0.0
    scale: float = 1.0
    blur: float = 0.0
    brightness: float = 1.0

    def __post_init__(self) -> None:
        if not (self.scale > 0):
            raise ValueError(f"SiteStyle.scale must be > 0, got {self.scale!r}")
        if self.blur < 0:
            raise ValueError(f"SiteStyle.blur must be >= 0, got {self.blur!r}")
        if not (self.brightness > 0):
            raise ValueError(f"SiteStyle.brightness must be > 0, got {self.brightness!r}")
        if self.stain_shift < 0:
            raise ValueError(f"SiteStyle.stain_shift must be >= 0, got {self.stain_shift!r}")


DEFAULT_STYLE = SiteStyle()


# --------------------------------------------------------------------------------------------------
# seeding


def class_key(label: str) -> int:
    """Stable 32-bit key of a class name (used in per-image seeds)."""
    return zlib.crc32(label.encode("utf-8")) & 0xFFFFFFFF


def image_rng(seed: int, label: str, index: int, variant: int = 0) -> np.random.Generator:
    """The random generator of image ``index`` of class ``label`` for ``seed``.

    ``variant`` separates independent streams for the same slot (1 is used for mislabelled images).
    """
    if seed < 0 or index < 0:
        raise ValueError("seed and index must be non-negative")
    return np.random.default_rng([int(seed), class_key(label), int(index), int(variant)])


# --------------------------------------------------------------------------------------------------
# drawing helpers (all lengths in pixels of the supersampled canvas)


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _blob_points(
    cx: float,
    cy: float,
    r: float,
    rng: np.random.Generator,
    *,
    ecc: float = 0.08,
    wobble: float = 0.03,
    n: int = 56,
    angle: float | None = None,
    ry_ratio: float = 1.0,
) -> np.ndarray:
    """Polygon of an irregular roundish outline, as int32 points with 3 fractional bits."""
    t = np.linspace(0.0, 2.0 * math.pi, n, endpoint=False)
    phi = rng.uniform(0, 2 * math.pi) if angle is None else angle
    rr = 1.0 + ecc * np.cos(2 * (t - phi))
    for k in (3, 4, 5):
        rr += wobble / k * 2 * rng.standard_normal() * np.cos(k * t + rng.uniform(0, 2 * math.pi))
    rr *= r
    x = cx + rr * np.cos(t)
    y = cy + rr * ry_ratio * np.sin(t)
    return np.round(np.stack([x, y], axis=1) * 8).astype(np.int32)


def _fill(mask: np.ndarray, pts: np.ndarray) -> None:
    cv2.fillPoly(mask, [pts], 1, lineType=cv2.LINE_8, shift=3)


def _disc(mask: np.ndarray, cx: float, cy: float, r: float, value: float = 1) -> None:
    cv2.circle(
        mask, (int(round(cx * 8)), int(round(cy * 8))), int(round(r * 8)), value, -1, lineType=cv2.LINE_8, shift=3
    )


def _line(mask: np.ndarray, p: tuple[float, float], q: tuple[float, float], th: float, value: float = 1) -> None:
    cv2.line(
        mask,
        (int(round(p[0] * 8)), int(round(p[1] * 8))),
        (int(round(q[0] * 8)), int(round(q[1] * 8))),
        value,
        max(1, int(round(th))),
        lineType=cv2.LINE_8,
        shift=3,
    )


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, int], cells: int) -> np.ndarray:
    """Smooth random field with zero mean and unit-ish std, ``cells`` blobs across."""
    # a fixed-size draw, cropped: the stream consumed does not depend on ``cells`` (i.e. on the scale)
    small = rng.standard_normal((32, 32), dtype=np.float32)[: min(32, cells), : min(32, cells)]
    return cv2.resize(small, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)


def _speckle(rng: np.random.Generator, shape: tuple[int, int], density: float, size: int) -> np.ndarray:
    """Binary fine granularity: about ``density`` of the area covered, in dots of ``size`` px."""
    h, w = shape[0] // size, shape[1] // size
    dots = (rng.random((h, w)) < density).astype(np.float32)
    return cv2.resize(dots, (shape[1], shape[0]), interpolation=cv2.INTER_LINEAR)


def _granules(
    canvas: np.ndarray,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    r: float,
    n: int,
    rad: tuple[float, float],
    dens: tuple[float, float],
) -> None:
    """Scatter ``n`` round granules uniformly in a disc of radius ``r`` onto ``canvas`` (overwrites)."""
    if n <= 0:
        return
    rho = r * np.sqrt(rng.random(n))
    th = rng.uniform(0, 2 * math.pi, n)
    rs = rng.uniform(rad[0], rad[1], n)
    ds = rng.uniform(dens[0], dens[1], n)
    xs = cx + rho * np.cos(th)
    ys = cy + rho * np.sin(th)
    xi = np.rint(xs * 8).astype(np.int64).tolist()
    yi = np.rint(ys * 8).astype(np.int64).tolist()
    ri = np.rint(rs * 8).astype(np.int64).tolist()
    for x, y, rr, d in zip(xi, yi, ri, ds.tolist()):
        cv2.circle(canvas, (x, y), rr, d, -1, lineType=cv2.LINE_8, shift=3)


# --------------------------------------------------------------------------------------------------
# red blood cells


def _draw_rbcs(eosin: np.ndarray, rng: np.random.Generator, k: float, wbc: tuple[float, float, float]) -> None:
    S = eosin.shape[0]
    wx, wy, wr = wbc
    placed: list[tuple[float, float, float]] = []
    # draw every candidate's parameters up front, so the random stream consumed does not depend on the
    # geometry (the same cell is drawn under every SiteStyle)
    attempts = 25
    n_try = int(rng.integers(10, 26))
    par = rng.random((attempts, 6))
    yy_cache: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for j in range(n_try):
        pr_, px_, py_, pe_, pp_, pd_ = par[j]
        R = (11.0 + 3.5 * pr_) * k
        x = -R * 0.6 + px_ * (S + 1.2 * R)
        y = -R * 0.6 + py_ * (S + 1.2 * R)
        if math.hypot(x - wx, y - wy) < wr + 0.35 * R:
            continue
        if any(math.hypot(x - px, y - py) < 1.55 * max(R, pr) for px, py, pr in placed):
            continue
        placed.append((x, y, R))
        half = int(math.ceil(R * 1.1)) + 2
        if half not in yy_cache:
            g = np.arange(-half, half + 1, dtype=np.float32)
            yy_cache[half] = (g[:, None], g[None, :])
        gy, gx = yy_cache[half]
        x0, y0 = int(round(x)), int(round(y))
        ex = 1.0 - 0.08 + 0.16 * pe_
        dx = (gx - (x - x0)) * ex
        dy = (gy - (y - y0)) / ex
        rr = np.sqrt(dx * dx + dy * dy)
        edge = np.clip((R - rr) / 1.2, 0.0, 1.0)
        pallor = 0.45 + 0.25 * pp_
        prof = (1.0 - pallor * np.exp(-((rr / (0.45 * R)) ** 2))) * (1.0 + 0.18 * (rr / R) ** 4)
        dens = (0.65 + 0.3 * pd_) * edge * prof
        # paste, clipped to the canvas (overlapping RBCs add up: darker overlap, as in a smear)
        ys0, ys1 = max(0, y0 - half), min(S, y0 + half + 1)
        xs0, xs1 = max(0, x0 - half), min(S, x0 + half + 1)
        if ys0 >= ys1 or xs0 >= xs1:
            continue
        eosin[ys0:ys1, xs0:xs1] += dens[ys0 - (y0 - half) : ys1 - (y0 - half), xs0 - (x0 - half) : xs1 - (x0 - half)]


# --------------------------------------------------------------------------------------------------
# white blood cells. Each drawer fills the stain maps (azure, blue, eosin, orange) and returns the
# cell mask. Radii are given in pixels of a 96-px image and multiplied by k.


def _cell_body(S: int, rng: np.random.Generator, cx: float, cy: float, R: float, ecc: float = 0.07) -> np.ndarray:
    body = np.zeros((S, S), np.float32)
    _fill(body, _blob_points(cx, cy, R, rng, ecc=ecc, wobble=0.035))
    return body


def _chromatin(rng: np.random.Generator, S: int, k: float, clump: float) -> np.ndarray:
    """Multiplicative chromatin texture around 1 (clumpy at larger ``clump``)."""
    n1 = _smooth_noise(rng, (S, S), max(4, int(S / (9 * k))))
    n2 = _smooth_noise(rng, (S, S), max(6, int(S / (4 * k))))
    return np.clip(1.0 + clump * (0.6 * n1 + 0.5 * n2), 0.35, 1.9)


def _lobe_chain(
    nuc: np.ndarray,
    rng: np.random.Generator,
    cx: float,
    cy: float,
    R: float,
    n_lobes: int,
    lobe_r: float,
    k: float,
    strand: float,
    spread: float,
) -> None:
    """Lobes on a curved chain through the cell, linked by thin chromatin strands."""
    # chain along an arc: positions spaced by ~ (2 lobe_r + gap)
    start = rng.uniform(0, 2 * math.pi)
    turn = rng.uniform(-0.9, 0.9)
    step = lobe_r * _u(rng, 1.9, 2.5)
    pts = [(0.0, 0.0)]
    ang = start
    for _ in range(n_lobes - 1):
        ang += turn + rng.normal(0, 0.55)
        px, py = pts[-1]
        pts.append((px + step * math.cos(ang), py + step * math.sin(ang)))
    arr = np.array(pts)
    arr -= arr.mean(axis=0)
    # keep the chain inside the cell
    ext = np.max(np.hypot(arr[:, 0], arr[:, 1])) + lobe_r
    lim = spread * R
    if ext > lim:
        arr *= (lim - lobe_r) / max(ext - lobe_r, 1e-6)
    arr += (cx, cy)
    for i in range(n_lobes - 1):
        _line(nuc, tuple(arr[i]), tuple(arr[i + 1]), strand * k)
    for x, y in arr:
        _fill(nuc, _blob_points(x, y, lobe_r * _u(rng, 0.85, 1.15), rng, ecc=0.15, wobble=0.05, n=28))


def _neutrophil(m: dict, rng: np.random.Generator, S: int, k: float, cx: float, cy: float) -> np.ndarray:
    R = _u(rng, 19.0, 24.0) * k
    body = _cell_body(S, rng, cx, cy, R)
    # pale pink-lilac cytoplasm with fine granules
    fine = _speckle(rng, (S, S), 0.25, 2)
    m["eosin"] += body * (_u(rng, 0.12, 0.22) + 0.10 * fine)
    m["azure"] += body * (_u(rng, 0.07, 0.13) + 0.07 * fine)
    n_lobes = int(rng.choice([2, 3, 3, 3, 4, 4, 4, 5], p=[0.13, 0.13, 0.13, 0.13, 0.15, 0.15, 0.11, 0.07]))
    nuc = np.zeros((S, S), np.float32)
    lobe_r = _u(rng, 4.6, 6.0) * k * (1.12 if n_lobes <= 2 else 1.0)
    _lobe_chain(nuc, rng, cx, cy, R, n_lobes, lobe_r, k, strand=_u(rng, 1.2, 2.2), spread=0.72)
    nuc = nuc * body
    m["azure"] += nuc * _u(rng, 1.6, 2.2) * _chromatin(rng, S, k, 0.22)
    if rng.random() < 0.15:  # toxic granulation: coarse dark-lilac granules (resembles other granulocytes)
        gran = np.zeros((S, S), np.float32)
        _granules(gran, rng, cx, cy, R * 0.95, int(rng.integers(40, 90)), (1.0 * k, 1.5 * k), (0.5, 1.0))
        gran *= body * (1.0 - np.clip(nuc, 0, 1))
        m["azure"] += gran
        m["eosin"] += _u(rng, 0.5, 1.2) * gran
    return body


def _eosinophil(m: dict, rng: np.random.Generator, S: int, k: float, cx: float, cy: float) -> np.ndarray:
    R = _u(rng, 20.0, 25.0) * k
    body = _cell_body(S, rng, cx, cy, R)
    m["eosin"] += body * _u(rng, 0.10, 0.2)
    m["azure"] += body * _u(rng, 0.03, 0.08)
    n_lobes = int(rng.choice([2, 3], p=[0.85, 0.15]))
    nuc = np.zeros((S, S), np.float32)
    lobe_r = _u(rng, 5.8, 7.4) * k
    _lobe_chain(nuc, rng, cx, cy, R, n_lobes, lobe_r, k, strand=_u(rng, 1.5, 3.0), spread=0.75)
    nuc = nuc * body
    m["azure"] += nuc * _u(rng, 1.4, 1.9) * _chromatin(rng, S, k, 0.18)
    # coarse orange-red granules filling the cytoplasm (some cells weakly granulated)
    weak = rng.random() < 0.25
    gran = np.zeros((S, S), np.float32)
    n = int(rng.integers(90, 150) * (R / (22 * k)) ** 2 * (0.5 if weak else 1.0))
    gd = (0.35, 0.85) if weak else (1.3, 2.1)
    _granules(gran, rng, cx, cy, R * 0.97, n, (1.3 * k, 1.9 * k), gd)
    gran *= body
    m["orange"] += gran * (1.0 - 0.6 * np.clip(nuc, 0, 1))
    return body


def _basophil(m: dict, rng: np.random.Generator, S: int, k: float, cx: float, cy: float) -> np.ndarray:
    R = _u(rng, 16.5, 21.0) * k
    body = _cell_body(S, rng, cx, cy, R)
    m["azure"] += body * _u(rng, 0.12, 0.25)
    m["eosin"] += body * _u(rng, 0.05, 0.12)
    nuc = np.zeros((S, S), np.float32)
    n_lobes = int(rng.choice([1, 2, 3], p=[0.3, 0.45, 0.25]))
    _lobe_chain(nuc, rng, cx, cy, R, n_lobes, _u(rng, 6.0, 8.0) * k, k, strand=3.0, spread=0.7)
    nuc = cv2.GaussianBlur(nuc * body, (0, 0), 1.5 * k)
    m["azure"] += nuc * _u(rng, 0.9, 1.4)
    # dense coarse blue-black granules, largely hiding the nucleus
    gran = np.zeros((S, S), np.float32)
    sparse = rng.random() < 0.25  # few granules: the lobed nucleus shows (resembles a neutrophil)
    n = int((rng.integers(20, 45) if sparse else rng.integers(60, 130)) * (R / (19 * k)) ** 2)
    if sparse:
        m["azure"] += nuc * _u(rng, 0.4, 0.8)
    _granules(gran, rng, cx, cy, R * 0.95, n, (1.4 * k, 2.4 * k), (1.6, 2.8))
    m["azure"] += gran * body
    return body


def _lymphocyte(m: dict, rng: np.random.Generator, S: int, k: float, cx: float, cy: float) -> np.ndarray:
    large = rng.random() < 0.25
    R = (_u(rng, 18.0, 22.5) if large else _u(rng, 14.0, 18.0)) * k
    body = _cell_body(S, rng, cx, cy, R, ecc=0.05)
    m["blue"] += body * (_u(rng, 0.22, 0.45) if large else _u(rng, 0.35, 0.7))
    m["azure"] += body * (_u(rng, 0.06, 0.16) if large else _u(rng, 0.0, 0.08))
    ratio = _u(rng, 0.62, 0.74) if large else _u(rng, 0.76, 0.88)
    off = R * (1 - ratio) * _u(rng, 0.2, 0.8)
    oa = rng.uniform(0, 2 * math.pi)
    nx, ny = cx + off * math.cos(oa), cy + off * math.sin(oa)
    nuc = np.zeros((S, S), np.float32)
    pts = _blob_points(nx, ny, R * ratio, rng, ecc=0.06, wobble=0.04)
    _fill(nuc, pts)
    if rng.random() < 0.2:  # slight indentation: some lymphocytes resemble monocytes
        _disc(
            nuc,
            nx + R * ratio * 1.05 * math.cos(oa + 2.0),
            ny + R * ratio * 1.05 * math.sin(oa + 2.0),
            R * ratio * 0.35,
            0,
        )
    nuc *= body
    m["blue"] *= 1.0 - 0.8 * nuc
    m["azure"] += nuc * (_u(rng, 1.5, 2.1) if large else _u(rng, 1.8, 2.6)) * _chromatin(rng, S, k, 0.25)
    return body


def _monocyte(m: dict, rng: np.random.Generator, S: int, k: float, cx: float, cy: float) -> np.ndarray:
    small = rng.random() < 0.3
    R = (_u(rng, 21.0, 24.0) if small else _u(rng, 24.0, 30.0)) * k
    body = _cell_body(S, rng, cx, cy, R, ecc=0.1)
    # grey-blue "ground glass" cytoplasm
    glass = _smooth_noise(rng, (S, S), max(8, int(S / (3 * k))))
    if small:  # bluer cytoplasm, like a large lymphocyte
        m["blue"] += body * (_u(rng, 0.28, 0.45) + 0.04 * glass)
        m["azure"] += body * (_u(rng, 0.06, 0.16) + 0.03 * glass)
    else:
        m["blue"] += body * (_u(rng, 0.17, 0.32) + 0.04 * glass)
        m["azure"] += body * (_u(rng, 0.16, 0.28) + 0.03 * glass)
    # kidney / horseshoe nucleus: an ellipse with a bite taken out of one side
    nuc = np.zeros((S, S), np.float32)
    nr = R * (_u(rng, 0.62, 0.74) if small else _u(rng, 0.55, 0.68))
    oa = rng.uniform(0, 2 * math.pi)
    off = R * _u(rng, 0.05, 0.22)
    nx, ny = cx + off * math.cos(oa), cy + off * math.sin(oa)
    _fill(nuc, _blob_points(nx, ny, nr, rng, ecc=0.16, wobble=0.06))
    shape = rng.random()
    bite_a = oa + math.pi + rng.normal(0, 0.5)
    if small and shape < 0.5:
        bite_r, bite_d = 0.35, 1.15  # barely indented (lymphocyte-like)
    elif shape < 0.55:
        bite_r, bite_d = 0.55, 0.95  # kidney
    else:
        bite_r, bite_d = 0.62, 0.6  # horseshoe
    _disc(nuc, nx + nr * bite_d * math.cos(bite_a), ny + nr * bite_d * math.sin(bite_a), nr * bite_r, 0)
    nuc = cv2.GaussianBlur(nuc, (0, 0), 0.8 * k) * body
    m["blue"] *= 1.0 - 0.7 * nuc
    m["azure"] += nuc * (_u(rng, 1.3, 1.8) if small else _u(rng, 1.05, 1.45)) * _chromatin(rng, S, k, 0.3)
    # a few vacuoles
    nv = int(rng.choice([0, 0, 1, 2, 3, 5]))
    vac = np.zeros((S, S), np.float32)
    for _ in range(nv):
        rho, th = R * _u(rng, 0.55, 0.85), rng.uniform(0, 2 * math.pi)
        _disc(vac, cx + rho * math.cos(th), cy + rho * math.sin(th), _u(rng, 1.2, 2.4) * k, 1)
    vac *= body * (1 - nuc)
    m["blue"] *= 1 - 0.85 * vac
    m["azure"] *= 1 - 0.85 * vac
    return body


_DRAWERS = {
    "basophil": _basophil,
    "eosinophil": _eosinophil,
    "lymphocyte": _lymphocyte,
    "monocyte": _monocyte,
    "neutrophil": _neutrophil,
}

#: Rough radius (96-px units) of each cell type, used to keep RBCs out of the way.
_NOMINAL_R = {"basophil": 19.0, "eosinophil": 22.5, "lymphocyte": 17.0, "monocyte": 27.0, "neutrophil": 21.5}


# --------------------------------------------------------------------------------------------------
# rendering


def _stain_vectors(style: SiteStyle, rng: np.random.Generator) -> dict[str, np.ndarray]:
    s = float(style.stain_shift)
    jit = lambda: np.float32(1.0 + rng.normal(0, 0.11))  # noqa: E731 - per-image stain intensity
    hue = lambda: rng.normal(0, 0.04, 3).astype(np.float32)  # noqa: E731 - per-image hue jitter
    vec = {
        "azure": (_AZURE + s * _AZURE_DRIFT + hue()) * jit(),
        "blue": (_BLUE + s * _BLUE_DRIFT + hue()) * jit(),
        "eosin": (_EOSIN * (1.0 - 0.15 * min(s, 2.0)) + s * _EOSIN_DRIFT + hue()) * jit(),
        "orange": (_ORANGE * (1.0 - 0.15 * min(s, 2.0)) + s * _EOSIN_DRIFT + hue()) * jit(),
    }
    return {name: np.maximum(v, 0.01).astype(np.float32) for name, v in vec.items()}


def make_image(label: str, rng: np.random.Generator, *, size: int = 96, style: SiteStyle = DEFAULT_STYLE) -> np.ndarray:
    """Draw one image of class ``label`` as a (size, size, 3) uint8 RGB array."""
    if label not in _DRAWERS:
        raise ValueError(f"unknown class {label!r}; expected one of {', '.join(CLASS_NAMES)}")
    if size < 16:
        raise ValueError(f"size must be >= 16, got {size}")
    S = size * _SS
    k = _SS * size / 96.0 * style.scale
    rbc = np.zeros((S, S), np.float32)

    # cell position: near the centre
    cx = S / 2 + rng.normal(0, 0.06) * S
    cy = S / 2 + rng.normal(0, 0.06) * S
    _draw_rbcs(rbc, rng, k, (cx, cy, _NOMINAL_R[label] * k * 0.9))
    wbc = {n: np.zeros((S, S), np.float32) for n in ("azure", "blue", "eosin", "orange")}
    body = _DRAWERS[label](wbc, rng, S, k, cx, cy)
    # the leukocyte pushes RBCs aside: replace, do not add, inside its outline (RBCs only carry eosin)
    wbc["eosin"] += rbc * (1.0 - body)

    vec = _stain_vectors(style, rng)
    names = ("azure", "blue", "eosin", "orange")
    stains = np.stack([wbc[n] for n in names], axis=-1).reshape(-1, 4)
    od = (stains @ np.stack([vec[n] for n in names])).reshape(S, S, 3)
    img = np.exp(-od)
    img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
    # lamp: colour (drifts with the stain batch), brightness, uneven illumination
    lamp = (_LAMP + float(style.stain_shift) * _LAMP_DRIFT) * np.float32(style.brightness * _u(rng, 0.94, 1.04))
    lamp = lamp + rng.normal(0, 2.5, 3).astype(np.float32)
    g = np.linspace(-1, 1, size, dtype=np.float32)
    a = rng.uniform(0, 2 * math.pi)
    tilt, vign = _u(rng, 0.0, 0.05), _u(rng, 0.0, 0.06)
    illum = (
        1.0 + tilt * (g[None, :] * math.cos(a) + g[:, None] * math.sin(a)) - vign * (g[None, :] ** 2 + g[:, None] ** 2)
    ).astype(np.float32)
    img *= illum[:, :, None] * lamp
    defocus = _u(rng, 0.7, 1.6) if rng.random() < 0.2 else 0.0  # some fields slightly out of focus
    sigma = _u(rng, 0.3, 0.7) + defocus + float(style.blur)
    img = cv2.GaussianBlur(img, (0, 0), sigma)
    img += rng.standard_normal(img.shape, dtype=np.float32) * np.float32(_u(rng, 1.5, 4.0))
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


def make_indexed_image(
    label: str, index: int, *, seed: int, size: int = 96, style: SiteStyle = DEFAULT_STYLE
) -> np.ndarray:
    """Image ``index`` of class ``label`` for ``seed`` (the same bytes whatever else is generated)."""
    return make_image(label, image_rng(seed, label, index), size=size, style=style)


# --------------------------------------------------------------------------------------------------
# data sets


def _counts(n_per_class: int | Mapping[str, int], classes: Sequence[str]) -> dict[str, int]:
    if isinstance(n_per_class, Mapping):
        unknown = set(n_per_class) - set(classes)
        if unknown:
            raise ValueError(f"n_per_class names classes not in classes: {sorted(unknown)}")
        counts = {c: int(n_per_class.get(c, 0)) for c in classes}
    else:
        counts = {c: int(n_per_class) for c in classes}
    if any(v < 0 for v in counts.values()):
        raise ValueError("n_per_class must be >= 0")
    for c in classes:
        if c not in _DRAWERS:
            raise ValueError(f"unknown class {c!r}; expected some of {', '.join(CLASS_NAMES)}")
    return counts


def iter_images(
    n_per_class: int | Mapping[str, int],
    *,
    seed: int,
    size: int = 96,
    style: SiteStyle = DEFAULT_STYLE,
    classes: Sequence[str] = CLASS_NAMES,
) -> Iterator[tuple[np.ndarray, int]]:
    """Yield ``(image, label_index)`` one at a time, classes interleaved (round robin).

    ``label_index`` indexes ``classes``. Any prefix of the stream is (nearly) class balanced, and only
    one image is in memory at a time, so very large streams (20,000+ images) are cheap.
    """
    classes = tuple(classes)
    counts = _counts(n_per_class, classes)
    for i in range(max(counts.values(), default=0)):
        for ci, c in enumerate(classes):
            if i < counts[c]:
                yield make_indexed_image(c, i, seed=seed, size=size, style=style), ci


def generate_arrays(
    n_per_class: int | Mapping[str, int],
    *,
    seed: int,
    size: int = 96,
    style: SiteStyle = DEFAULT_STYLE,
    classes: Sequence[str] = CLASS_NAMES,
) -> tuple[np.ndarray, np.ndarray]:
    """All images in memory: ``(images uint8 (n, size, size, 3), labels int64 (n,))``, in
    :func:`iter_images` order."""
    counts = _counts(n_per_class, tuple(classes))
    n = sum(counts.values())
    images = np.empty((n, size, size, 3), np.uint8)
    labels = np.empty((n,), np.int64)
    for j, (img, lab) in enumerate(iter_images(counts, seed=seed, size=size, style=style, classes=classes)):
        images[j] = img
        labels[j] = lab
    return images, labels


def _pick_mislabels(
    counts: dict[str, int], classes: tuple[str, ...], mislabel: int, seed: int
) -> dict[tuple[str, int], str]:
    """Choose ``mislabel`` slots ``(given_class, index) -> true_class``, spread over the classes."""
    rng = np.random.default_rng([int(seed), 0x5EED, 0x3A1])
    usable = [c for c in classes if counts[c] > 0]
    if mislabel and (len(usable) < 2 or len(classes) < 2):
        raise ValueError("mislabel needs at least two classes with images")
    if mislabel > sum(counts.values()) // 2:
        raise ValueError(f"mislabel={mislabel} is too many for {sum(counts.values())} images")
    order = list(rng.permutation(usable))
    slots: dict[tuple[str, int], str] = {}
    j = 0
    while len(slots) < mislabel:
        given = order[j % len(order)]
        j += 1
        free = [i for i in range(counts[given]) if (given, i) not in slots]
        if not free:
            continue
        idx = int(rng.choice(free))
        true = str(rng.choice([c for c in classes if c != given]))
        slots[(given, idx)] = true
    return slots


def generate_dataset(
    out_dir: str | Path,
    *,
    n_per_class: int | Mapping[str, int],
    seed: int,
    size: int = 96,
    style: SiteStyle = DEFAULT_STYLE,
    classes: Sequence[str] = CLASS_NAMES,
    mislabel: int = 0,
    fmt: str = "png",
) -> dict:
    """Write ``out_dir/<class>/<class>_<i:04d>.<fmt>`` and return a manifest dict.

    With ``mislabel > 0`` that many slots (spread over the classes) hold an image drawn as another
    class (from an independent random stream); they are listed in ``manifest["mislabelled"]`` with
    paths relative to ``out_dir``. ``fmt`` is ``"png"`` (lossless, compression 9) or ``"jpg"``
    (quality 95). Existing files are overwritten; other files are left alone.
    """
    classes = tuple(classes)
    counts = _counts(n_per_class, classes)
    fmt = fmt.lower().lstrip(".")
    if fmt == "png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, 9]
    elif fmt in ("jpg", "jpeg"):
        fmt, params = "jpg", [cv2.IMWRITE_JPEG_QUALITY, 95]
    else:
        raise ValueError(f"fmt must be 'png' or 'jpg', got {fmt!r}")
    out = Path(out_dir)
    slots = _pick_mislabels(counts, classes, int(mislabel), seed)
    mislabelled = []
    for c in classes:
        (out / c).mkdir(parents=True, exist_ok=True)
        for i in range(counts[c]):
            rel = f"{c}/{c}_{i:04d}.{fmt}"
            true = slots.get((c, i))
            if true is None:
                img = make_indexed_image(c, i, seed=seed, size=size, style=style)
            else:
                img = make_image(true, image_rng(seed, true, i, variant=1), size=size, style=style)
                mislabelled.append({"path": rel, "true_label": true, "given_label": c})
            if not cv2.imwrite(str(out / rel), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), params):
                raise OSError(f"could not write {out / rel}")
    return {
        "generator": "sample_data.generator",
        "generator_version": GENERATOR_VERSION,
        "seed": int(seed),
        "image_size": [int(size), int(size)],
        "format": fmt,
        "style": asdict(style),
        "class_names": list(classes),
        "counts": counts,
        "n_images": int(sum(counts.values())),
        "mislabelled": sorted(mislabelled, key=lambda d: d["path"]),
    }


def contact_sheet(images: Sequence[np.ndarray], ncols: int, *, pad: int = 2) -> np.ndarray:
    """Tile equally sized RGB images into one RGB array (for looking at the data)."""
    n = len(images)
    h, w = images[0].shape[:2]
    nrows = (n + ncols - 1) // ncols
    sheet = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, 3), 255, np.uint8)
    for j, img in enumerate(images):
        r, c = divmod(j, ncols)
        sheet[pad + r * (h + pad) : pad + r * (h + pad) + h, pad + c * (w + pad) : pad + c * (w + pad) + w] = img
    return sheet


def write_manifest(path: str | Path, manifest: dict) -> None:
    Path(path).write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n", encoding="utf-8")
