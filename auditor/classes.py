"""Which model output is which class, and how the data set's labels map onto them."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from .errors import input_error


@dataclass(frozen=True)
class ClassMapping:
    """``model_classes[i]`` names model output ``i``; ``data_to_model`` maps each data label to an output."""

    model_classes: tuple[str, ...]
    source: str  # "sidecar", "--class-names" or "folder names"
    data_to_model: dict[str, int]
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict:
        return {
            "model_classes": list(self.model_classes),
            "source": self.source,
            "data_to_model": dict(self.data_to_model),
            "notes": list(self.notes),
        }


def _fmt(names: Sequence[str]) -> str:
    return "[" + ", ".join(names) + "]"


def match_label(label: str, model_classes: Sequence[str]) -> int | None:
    """The model output named ``label``: exact name first, then case-insensitively when unambiguous."""
    if label in model_classes:
        return list(model_classes).index(label)
    folded = [i for i, n in enumerate(model_classes) if n.casefold() == label.casefold()]
    return folded[0] if len(folded) == 1 else None


def resolve_classes(
    n_outputs: int,
    *,
    data_labels: Sequence[str],
    labels_with_images: Sequence[str],
    sidecar_names: Sequence[str] | None = None,
    sidecar_path: Path | None = None,
    cli_names: Sequence[str] | None = None,
    data_path: Path | str = "DATA",
) -> ClassMapping:
    """Decide the model's class order and match the data set's labels to it.

    Order of authority: the sidecar's ``class_names``, then ``--class-names``, then the sorted folder
    names. Data labels are matched by exact name, then case-insensitively. A data label with images
    that matches no model class is an input error listing both sides.
    """
    notes: list[str] = []
    if sidecar_names is not None:
        if cli_names is not None and tuple(cli_names) != tuple(sidecar_names):
            raise input_error(
                "--class-names",
                f"{_fmt(cli_names)} differs from the sidecar's class_names {_fmt(sidecar_names)} in {sidecar_path}",
                hint="drop the option or fix the sidecar",
            )
        names, source = tuple(sidecar_names), "sidecar"
        if len(names) != n_outputs:
            raise input_error(
                sidecar_path or "sidecar",
                f"lists {len(names)} class names {_fmt(names)} but the model has {n_outputs} outputs",
            )
    elif cli_names is not None:
        names, source = tuple(cli_names), "--class-names"
        if len(names) != n_outputs:
            raise input_error(
                "--class-names", f"gives {len(names)} names {_fmt(names)} but the model has {n_outputs} outputs"
            )
    else:
        names, source = tuple(sorted(data_labels)), "folder names"
        if len(names) != n_outputs:
            raise input_error(
                data_path,
                f"has {len(names)} classes {_fmt(names)} but the model has {n_outputs} outputs",
                hint="name the model's classes with --class-names or a sidecar JSON next to the model",
            )

    mapping: dict[str, int] = {}
    unmatched: list[str] = []
    for label in data_labels:
        i = match_label(label, names)
        if i is not None:
            mapping[label] = i
            if names[i] != label:
                notes.append(f"data label '{label}' matched model class '{names[i]}' ignoring case")
        elif label in labels_with_images:
            unmatched.append(label)
        else:
            notes.append(f"empty class folder '{label}' matches no model class and was ignored")
    if unmatched:
        raise input_error(
            data_path,
            f"has classes {_fmt(unmatched)} that the model does not know; model classes "
            f"({source}): {_fmt(names)}; data classes: {_fmt(data_labels)}",
        )
    with_images = {mapping[label] for label in labels_with_images if label in mapping}
    missing = [n for i, n in enumerate(names) if i not in with_images]
    if missing:
        notes.append("model classes without any image in the data: " + ", ".join(missing))
    return ClassMapping(names, source, mapping, tuple(notes))


def match_site_classes(
    model_classes: Sequence[str], *, labels_with_images: Sequence[str], site: str, path: Path | str
) -> tuple[dict[str, int], tuple[str, ...]]:
    """Match an external site's class folders to the model's classes by name.

    Returns (label -> model output, unknown labels). A site may hold fewer classes than the model; its
    unknown classes are left out (and reported); a site with no known class is an input error.
    """
    mapping: dict[str, int] = {}
    unknown = []
    for label in labels_with_images:
        i = match_label(label, model_classes)
        if i is None:
            unknown.append(label)
        else:
            mapping[label] = i
    if not mapping:
        raise input_error(
            f"--external {site}={path}",
            f"holds no class the model knows; site classes: "
            f"{_fmt(labels_with_images)}; model classes: {_fmt(model_classes)}",
        )
    return mapping, tuple(unknown)
