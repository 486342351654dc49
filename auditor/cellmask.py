"""Segment the white cell (nucleus and cytoplasm) in a stained blood-smear crop (OpenCV, no model).

The crops this is for (CellaVision-style, e.g. the PBC data set) hold one white cell near the centre, among red
cells on a pale background. Under Wright-Giemsa or May-Grunwald stain the nucleus is dark purple; the cytoplasm
is pale lilac (neutrophils, monocytes, lymphocytes), full of orange-red granules (eosinophils) or of dark ones
(basophils); red cells are pink to grey-lilac, the background cream. Three colour channels carry this, on the RGB
image smoothed with a Gaussian (sigma 1 % of the shorter side):

* darkness ``D = 255 - G``: the nucleus is far darker than anything else (all stains absorb green);
* cell colour ``C = 0.4 R - G + 0.75 B``: a linear discriminant of white-cell pixels against red-cell and
  background pixels, fitted on the hand-boxed PBC cells that also measure it (below); pale lilac cytoplasm
  scores above grey-pink red cells;
* blueness ``B - R``: pale *blue* cytoplasm (lymphocytes, monocytes) is bluer than any red cell.

What the white cell must be compared with is *this* image's surroundings, whatever the stain's shade: the
border band (the outer ``BAND`` = 12 % of the side on each edge; the cell is centred, so the band is red cells
and background) gives the thresholds. Method (:func:`cell_mask`):

1. **Nucleus (the seed).** Otsu's threshold on ``D``, intersected with "darker than the band's typical red cell
   by ``MARGIN`` grey levels" (Otsu's threshold splits the band's ``D`` into background and red cells; the
   median of the darker side is the typical red cell), opened with a small disc (3 % of the side); the largest
   blob is the nucleus. None when nothing is that much darker than the red cells (a blank, unstained or
   red-cells-only image).
2. **The cell.** Pixels above the band's 98.5th percentile of ``C``, or its 99.5th percentile of ``D`` or of
   ``B - R`` (what is more lilac, darker or bluer than almost all red cells and background; each threshold at
   least ``FLOOR`` of the way from the band's median to the nucleus's, for images with no red cells in the
   band), opened with a disc of ``OPEN`` = 10 % of the side (cuts the narrow bridges to touching red cells
   and platelets); the blobs that meet the nucleus, with the nucleus, closed with the same disc, holes filled.
3. **Checks.** A mask whose solidity (area over its convex hull's) is below ``MIN_SOLIDITY`` has leaked (into a
   smudge or a chain of red cells): it is opened again with a larger disc (``CUT`` = 12 %) and kept only if
   then solid enough. A mask covering under ``MIN_AREA`` or over ``MAX_AREA`` of the image is not a cell.
   Each failure returns None -- "segmentation failed" for that image -- rather than a guessed outline. A second
   white cell in the border band raises the thresholds; the mask may then fail (2 of 402 PBC images).

Measured (``tests/test_cellmask.py``; README "Grad-CAM") against hand-drawn boxes of 50 PBC test images
(``tests/data/pbc_cell_boxes.csv``) and against the true outlines of synthetic sample-data cells.
"""

from __future__ import annotations

import cv2
import numpy as np

BAND = 0.12  # width of the border band that samples the surroundings, as a share of the shorter side
MARGIN = 20.0  # the nucleus must be this much darker (D, grey levels) than the band's typical red cell
C_PCT = 98.5  # cell: above this percentile of the band's cell-colour channel ...
D_PCT = 99.5  # ... or above this percentile of its darkness
FLOOR = 0.10  # ... and at least this share of the way from the band's median to the nucleus's
B_PCT = 99.5  # ... or above this percentile of its blueness B - R (pale blue cytoplasm)
OPEN = 0.10  # opening/closing disc for the cell, as a share of the side
CUT = 0.12  # larger opening tried once when the mask leaked
MIN_SOLIDITY = 0.80
MIN_AREA = 0.01  # the cell must cover at least 1 % of the image ...
MAX_AREA = 0.80  # ... and at most 80 %


def _disc(side: int, frac: float) -> np.ndarray:
    k = max(3, int(round(frac * side)) | 1)
    return cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))


def _fill(mask: np.ndarray) -> np.ndarray:
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = np.zeros_like(mask)
    cv2.drawContours(out, contours, -1, 1, thickness=cv2.FILLED)
    return out


def solidity(mask: np.ndarray) -> float:
    """Area of a mask over the area of the convex hull of all its parts (1 for a convex blob)."""
    m = np.asarray(mask, dtype=np.uint8)
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return 0.0
    hull = cv2.convexHull(np.concatenate(contours))
    return float(m.astype(bool).sum()) / max(cv2.contourArea(hull), 1.0)


def _touching(candidate: np.ndarray, seed: np.ndarray) -> np.ndarray:
    """The seed and the blobs of ``candidate`` (uint8) that meet it, holes filled (uint8 0/1)."""
    _, labels = cv2.connectedComponents(candidate, connectivity=8)
    keep = np.unique(labels[seed & (labels > 0)])
    return _fill((np.isin(labels, keep[keep > 0]) | seed).astype(np.uint8))


def nucleus_mask(rgb: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the nucleus (step 1 of :func:`cell_mask`), or None."""
    found = _nucleus(rgb)
    return None if found is None else found[0]


def _nucleus(rgb: np.ndarray):
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3 or min(a.shape[:2]) < 8:
        return None
    h, w = a.shape[:2]
    side = min(h, w)
    f = cv2.GaussianBlur(a.astype(np.float32), (0, 0), max(0.5, 0.01 * side))
    dark = 255.0 - f[..., 1]
    colour = 0.4 * f[..., 0] - f[..., 1] + 0.75 * f[..., 2]
    b = max(1, int(round(BAND * side)))
    band = np.ones((h, w), dtype=bool)
    band[b : h - b, b : w - b] = False
    ring = np.clip(dark[band], 0, 255).astype(np.uint8)
    split, _ = cv2.threshold(ring, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)  # background | red cells
    above = dark[band][dark[band] > split]
    floor = (float(np.median(above)) if len(above) else float(split)) + MARGIN  # typical red cell, + MARGIN
    lo, hi = float(dark.min()), float(dark.max())
    if hi <= floor:
        return None
    u8 = np.clip((dark - lo) * (255.0 / (hi - lo)), 0, 255).astype(np.uint8)
    _, otsu = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    core = ((otsu > 0) & (dark > floor)).astype(np.uint8)
    core = cv2.morphologyEx(core, cv2.MORPH_OPEN, _disc(side, 0.03))
    n, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    if n <= 1:
        return None
    seed = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))
    return seed, dark, colour, band, side, f[..., 2] - f[..., 0]


def _threshold(channel: np.ndarray, band: np.ndarray, seed: np.ndarray, pct: float) -> float:
    """The band's ``pct`` percentile, but at least ``FLOOR`` of the way from the band's median to the nucleus's
    (on a flat background the percentile is the background itself, and the smoothed edge would join the cell)."""
    med = float(np.median(channel[band]))
    return max(float(np.percentile(channel[band], pct)), med + FLOOR * (float(np.median(channel[seed])) - med))


def cell_mask(rgb: np.ndarray) -> np.ndarray | None:
    """Boolean mask (h, w) of the white cell, nucleus and cytoplasm, in an RGB image (uint8 or [0, 255]
    float), or None when segmentation fails. See the module docstring for the method."""
    found = _nucleus(rgb)
    if found is None:
        return None
    seed, dark, colour, band, side, blue = found
    candidate = (colour > _threshold(colour, band, seed, C_PCT)) | (dark > _threshold(dark, band, seed, D_PCT))
    candidate |= blue > _threshold(blue, band, seed, B_PCT)
    disc = _disc(side, OPEN)
    candidate = cv2.morphologyEx(candidate.astype(np.uint8), cv2.MORPH_OPEN, disc)
    mask = _touching(candidate, seed)
    mask = _fill(cv2.morphologyEx(mask, cv2.MORPH_CLOSE, disc))
    if solidity(mask) < MIN_SOLIDITY:  # leaked: cut the thin parts once more, keep what meets the nucleus
        mask = _touching(cv2.morphologyEx(mask, cv2.MORPH_OPEN, _disc(side, CUT)), seed)
        if solidity(mask) < MIN_SOLIDITY:
            return None
    share = float(mask.mean())
    if share < MIN_AREA or share > MAX_AREA:
        return None
    return mask.astype(bool)


def outline(mask: np.ndarray) -> list[np.ndarray]:
    """The mask's outer contours as (m, 2) arrays of (x, y) points, for drawing."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c[:, 0, :] for c in contours]
