"""Segment the white cell in a stained blood-smear crop (OpenCV, no model).

Method (:func:`cell_mask`): Wright-Giemsa and May-Grunwald stains colour the white cell's nucleus purple and
its cytoplasm blue to lilac, while red cells are pink and the background pale cream or grey. So the *stain
channel* ``B - R`` (blue minus red, on the RGB image) is high on the white cell and near zero or negative on
red cells and background. The channel is smoothed (Gaussian, sigma ~1 % of the image side), thresholded with
Otsu's method, closed and opened with an elliptic kernel (~6 % of the side) to join nucleus lobes and
cytoplasm and drop specks, holes are filled, and the largest connected component is kept.

Segmentation is reported as failed (``None``) rather than guessed when the stain channel shows no contrast
(its 99th minus 1st percentile below ``MIN_CONTRAST``: a blank or unstained image), or when the kept
component covers less than ``MIN_AREA`` or more than ``MAX_AREA`` of the image (nothing found, or the
threshold took the background).
"""

from __future__ import annotations

import cv2
import numpy as np

MIN_CONTRAST = 20.0  # stain-channel spread (grey levels) below which there is no stained cell to find
MIN_AREA = 0.01  # the cell must cover at least 1 % of the image ...
MAX_AREA = 0.80  # ... and at most 80 %
WIDE = 0.4  # the cytoplasm threshold, as a share of the nucleus (Otsu) threshold


def stain_channel(rgb: np.ndarray) -> np.ndarray:
    """B - R of a uint8 (or [0, 255] float) RGB image, float32."""
    a = np.asarray(rgb, dtype=np.float32)
    return a[..., 2] - a[..., 0]


def cell_mask(rgb: np.ndarray) -> np.ndarray | None:
    """Boolean mask (h, w) of the white cell in an RGB image, or None when segmentation fails."""
    a = np.asarray(rgb)
    if a.ndim != 3 or a.shape[2] != 3:
        return None
    h, w = a.shape[:2]
    side = min(h, w)
    s = cv2.GaussianBlur(stain_channel(a), (0, 0), max(0.5, 0.01 * side))
    s = np.maximum(s, 0.0)  # red cells and background (B <= R) are one class: "not stained blue"
    hi = float(np.percentile(s, 99.5))
    if hi - float(np.percentile(s, 1)) < MIN_CONTRAST:
        return None
    u8 = np.clip(s * (255.0 / hi), 0, 255).astype(np.uint8)
    t, core = cv2.threshold(u8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    k = max(3, int(round(0.06 * side)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k))
    core = cv2.morphologyEx(core, cv2.MORPH_OPEN, kernel)
    n, labels, stats, _ = cv2.connectedComponentsWithStats(core, connectivity=8)
    if n <= 1:
        return None
    seed = labels == 1 + int(np.argmax(stats[1:, cv2.CC_STAT_AREA]))  # the most stained blob: the nucleus
    # grow it into the paler cytoplasm: the component of a lower threshold (WIDE x Otsu's) holding the seed
    wide = (u8 > WIDE * t).astype(np.uint8) * 255
    wide = cv2.morphologyEx(wide, cv2.MORPH_CLOSE, kernel)
    wide = cv2.morphologyEx(wide, cv2.MORPH_OPEN, kernel)
    _, wl = cv2.connectedComponentsWithStats(wide, connectivity=8)[:2]
    keep = np.unique(wl[seed & (wl > 0)])
    mask = (np.isin(wl, keep) | seed).astype(np.uint8)
    contours, _ = cv2.findContours(mask, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(mask)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)  # fill holes
    share = float(filled.mean())
    if share < MIN_AREA or share > MAX_AREA:
        return None
    return filled.astype(bool)


def outline(mask: np.ndarray) -> list[np.ndarray]:
    """The mask's outer contours as (m, 2) arrays of (x, y) points, for drawing."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    return [c[:, 0, :] for c in contours]
