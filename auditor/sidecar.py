"""The model sidecar: a JSON file next to the model that says how the model expects its input.

For ``models/wbc.keras`` the sidecar is ``models/wbc.json``. Every key is optional::

    {
      "schema_version": 1,
      "class_names": ["basophil", "eosinophil", "lymphocyte", "monocyte", "neutrophil"],
      "preprocess": "raw",              # unit | raw | symmetric | caffe | torch
      "resize": "bilinear",             # any name of auditor.resize.METHODS (pil:bilinear, cv2:area, ...)
      "crop": "none",                   # none | center-square | center:FRACTION
      "channel_order": "rgb",           # rgb | bgr
      "input_size": [96, 96],           # height, width (checked against the model)
      "architecture": "small_cnn",
      "intended_use": "free text",
      "training_data": "free text",
      "training": {...}                 # free-form, shown in the report
    }
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import input_error
from .preprocess import SCALINGS
from .resize import CHANNELS, METHODS, parse_crop, resize_choices_text

KNOWN_KEYS = {
    "schema_version",
    "class_names",
    "preprocess",
    "resize",
    "crop",
    "channel_order",
    "input_size",
    "architecture",
    "intended_use",
    "training_data",
    "training",
}


@dataclass(frozen=True)
class Sidecar:
    path: Path
    class_names: tuple[str, ...] | None = None
    preprocess: str | None = None
    resize: str | None = None
    crop: str | None = None
    channel_order: str | None = None
    input_size: tuple[int, int] | None = None
    architecture: str | None = None
    intended_use: str | None = None
    training_data: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {
            "path": str(self.path),
            "class_names": list(self.class_names) if self.class_names else None,
            "preprocess": self.preprocess,
            "resize": self.resize,
            "crop": self.crop,
            "channel_order": self.channel_order,
            "input_size": list(self.input_size) if self.input_size else None,
            "architecture": self.architecture,
            "intended_use": self.intended_use,
            "training_data": self.training_data,
            "extra": self.extra,
        }


def sidecar_path(model_path: Path) -> Path:
    model_path = Path(model_path)
    if model_path.is_dir():
        return model_path.with_name(model_path.name + ".json")
    return model_path.with_suffix(".json")


def load_sidecar(model_path: Path) -> Sidecar | None:
    """Read and validate the sidecar of ``model_path``; None when there is none."""
    path = sidecar_path(model_path)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise input_error(path, f"is not valid JSON ({exc})", hint="fix or remove the model's sidecar") from None
    if not isinstance(raw, dict):
        raise input_error(path, "is not a JSON object", expected="a sidecar object with keys such as class_names")
    names = raw.get("class_names")
    if names is not None:
        if (
            not isinstance(names, list)
            or not names
            or not all(isinstance(n, str) and n for n in names)
            or len(set(names)) != len(names)
        ):
            raise input_error(path, "'class_names' is not a list of distinct non-empty strings")
        names = tuple(names)
    pre = raw.get("preprocess")
    if pre is not None and pre not in SCALINGS:
        raise input_error(path, f"'preprocess' is {pre!r}", expected="one of " + ", ".join(SCALINGS))
    resize = raw.get("resize")
    if resize is not None and (not isinstance(resize, str) or resize not in METHODS):
        raise input_error(path, f"'resize' is {resize!r}", expected="one of " + resize_choices_text())
    crop = raw.get("crop")
    if crop is not None:
        try:
            if not isinstance(crop, str):
                raise ValueError
            parse_crop(crop)
        except ValueError:
            raise input_error(
                path, f"'crop' is {crop!r}", expected="none, center-square, or center:FRACTION with FRACTION in (0, 1]"
            ) from None
    channel_order = raw.get("channel_order")
    if channel_order is not None and channel_order not in CHANNELS:
        raise input_error(path, f"'channel_order' is {channel_order!r}", expected="one of " + ", ".join(CHANNELS))
    size = raw.get("input_size")
    if size is not None:
        if not (isinstance(size, list) and len(size) == 2 and all(type(v) is int and v > 0 for v in size)):
            raise input_error(path, f"'input_size' is {size!r}", expected="[height, width] as positive integers")
        size = (size[0], size[1])
    text = {}
    for key in ("architecture", "intended_use", "training_data"):
        v = raw.get(key)
        if v is not None and not isinstance(v, str):
            raise input_error(path, f"'{key}' is not a string")
        text[key] = v
    extra = {k: v for k, v in raw.items() if k not in KNOWN_KEYS or k == "training"}
    return Sidecar(
        path=path,
        class_names=names,
        preprocess=pre,
        resize=resize,
        crop=crop,
        channel_order=channel_order,
        input_size=size,
        extra=extra,
        **text,
    )
