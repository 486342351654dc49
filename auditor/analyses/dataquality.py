"""What the data set held: files used and skipped, empty classes, byte-identical duplicates."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from ._common import fields_of, jsonable


@dataclass(frozen=True)
class DuplicateGroup:
    sha256: str
    paths: tuple[str, ...]
    labels: tuple[str, ...]

    @property
    def conflicting(self) -> bool:
        return len(set(self.labels)) > 1


@dataclass(frozen=True)
class DataQuality:
    n_files: int  # image candidates plus files skipped on sight
    n_used: int
    counts: tuple[tuple[str, int], ...]  # images used per data label
    skipped: tuple[tuple[str, str], ...]  # (relative path, reason)
    skipped_by_reason: tuple[tuple[str, int], ...]
    empty_classes: tuple[str, ...]
    duplicates: tuple[DuplicateGroup, ...]
    warnings: tuple[str, ...]

    def to_dict(self) -> dict:
        d = fields_of(self)
        d["counts"] = dict(self.counts)
        d["skipped"] = [{"path": p, "reason": r} for p, r in self.skipped]
        d["skipped_by_reason"] = dict(self.skipped_by_reason)
        d["duplicates"] = [
            {"sha256": g.sha256, "paths": list(g.paths), "labels": list(g.labels), "conflicting": g.conflicting}
            for g in self.duplicates
        ]
        return jsonable(d)

    @classmethod
    def from_dict(cls, d: dict) -> DataQuality:
        return cls(
            n_files=int(d["n_files"]),
            n_used=int(d["n_used"]),
            counts=tuple(d["counts"].items()),
            skipped=tuple((s["path"], s["reason"]) for s in d["skipped"]),
            skipped_by_reason=tuple(d["skipped_by_reason"].items()),
            empty_classes=tuple(d["empty_classes"]),
            duplicates=tuple(
                DuplicateGroup(g["sha256"], tuple(g["paths"]), tuple(g["labels"])) for g in d["duplicates"]
            ),
            warnings=tuple(d["warnings"]),
        )


def compute_data_quality(
    *,
    used_paths: Sequence[str],
    used_labels: Sequence[str],
    used_hashes: Sequence[str],
    skipped: Sequence[tuple[str, str]],
    labels: Sequence[str],
    empty_classes: Sequence[str],
    min_per_class: int = 10,
) -> DataQuality:
    """Summarise the data set as the audit saw it.

    ``used_*`` describe the images that went through the model (same order); ``labels`` are every
    data label in display order; ``skipped`` lists (path, reason) of every file not used.
    """
    counts = Counter(used_labels)
    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, h in enumerate(used_hashes):
        by_hash[h].append(i)
    groups = tuple(
        DuplicateGroup(h, tuple(used_paths[i] for i in idx), tuple(used_labels[i] for i in idx))
        for h, idx in sorted(by_hash.items(), key=lambda kv: used_paths[kv[1][0]])
        if len(idx) > 1
    )
    reasons = Counter(_reason_kind(r) for _, r in skipped)
    warnings = []
    if skipped:
        warnings.append(f"{len(skipped)} file(s) were skipped and not audited (listed under Data).")
    conflicting = [g for g in groups if g.conflicting]
    if conflicting:
        warnings.append(
            f"{len(conflicting)} image(s) appear byte-identical under different labels "
            f"(e.g. {' and '.join(conflicting[0].paths[:2])}): at least one label is wrong."
        )
    if len(groups) > len(conflicting):
        warnings.append(
            f"{len(groups) - len(conflicting)} image(s) appear more than once under the same label; "
            "they count twice in every number."
        )
    if empty_classes:
        warnings.append("Empty class folder(s): " + ", ".join(empty_classes) + ".")
    small = [name for name in labels if 0 < counts.get(name, 0) < min_per_class]
    if small:
        warnings.append(
            "few images in "
            + ", ".join(f"{n} ({counts[n]})" for n in small)
            + ": their per-class numbers are very uncertain; read the intervals."
        )
    return DataQuality(
        n_files=len(used_paths) + len(skipped),
        n_used=len(used_paths),
        counts=tuple((name, int(counts.get(name, 0))) for name in labels),
        skipped=tuple((p, r) for p, r in skipped),
        skipped_by_reason=tuple(sorted(reasons.items())),
        empty_classes=tuple(empty_classes),
        duplicates=groups,
        warnings=tuple(warnings),
    )


def _reason_kind(reason: str) -> str:
    """The kind of a reason: the text before any detail in parentheses or after a colon."""
    return reason.split(" (", maxsplit=1)[0].split(":", maxsplit=1)[0]
