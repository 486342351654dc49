"""The report's sections: one module each, in report order.

**The registry is the list below.** Adding a section means one new module in this package (or in another
installed package), one template partial (``templates/sections/<name>.html``) and one line here. Sections
from other packages are found through the entry-point group ``wbc_audit.sections`` (each entry point names a
:class:`~auditor.sections.base.Section` subclass) and come after the built-in ones, sorted by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from importlib import metadata

from .base import Section
from .calibration import CalibrationSection
from .classification import ClassificationSection
from .data_quality import DataQualitySection
from .external_sites import ExternalSitesSection
from .fisher import FisherSection
from .gradcam import GradcamSection
from .influence import InfluenceSection
from .model_sanity import ModelSanitySection
from .perturbation_grid import PerturbationGridSection
from .preprocessing_check import PreprocessingCheckSection
from .selective import SelectiveSection

ENTRY_POINT_GROUP = "wbc_audit.sections"

#: The built-in sections, in report order.
BUILTIN: tuple[type[Section], ...] = (
    ModelSanitySection,
    PreprocessingCheckSection,
    ClassificationSection,
    FisherSection,
    InfluenceSection,
    GradcamSection,
    CalibrationSection,
    SelectiveSection,
    PerturbationGridSection,
    ExternalSitesSection,
    DataQualitySection,
)


@dataclass(frozen=True)
class PluginFailure:
    """A plug-in section that could not be loaded: recorded as a failed section in every report."""

    name: str
    error: str


@dataclass(frozen=True)
class Registry:
    sections: tuple[Section, ...]
    failed_plugins: tuple[PluginFailure, ...] = ()

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.sections)

    def get(self, name: str) -> Section:
        for s in self.sections:
            if s.name == name:
                return s
        raise KeyError(name)

    def known(self, name: str) -> bool:
        return name in self.names or any(f.name == name for f in self.failed_plugins)


def _load_plugins(builtin_names: Sequence[str]) -> tuple[list[Section], list[PluginFailure]]:
    sections: list[Section] = []
    failures: list[PluginFailure] = []
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        try:
            cls = ep.load()
            section = cls() if isinstance(cls, type) else cls
            if not isinstance(section, Section):
                raise TypeError(f"{ep.value} is not a wbc-audit Section (subclass auditor.sections.base.Section)")
            if not section.name or section.name != ep.name:
                raise ValueError(f"its name {section.name!r} differs from the entry point's {ep.name!r}")
            if section.name in builtin_names or section.name in (s.name for s in sections):
                raise ValueError(f"the name {section.name!r} is taken by another section")
        except Exception as exc:
            failures.append(
                PluginFailure(
                    ep.name, f"plug-in {ep.value!r} failed to load: {type(exc).__name__}: {' '.join(str(exc).split())}"
                )
            )
            continue
        sections.append(section)
    return sections, failures


def registry(*, plugins: bool = True) -> Registry:
    """The built-in sections in report order, then the installed plug-in sections (sorted by name)."""
    builtin = [cls() for cls in BUILTIN]
    if not plugins:
        return Registry(tuple(builtin))
    extra, failed = _load_plugins([s.name for s in builtin])
    return Registry(tuple(builtin + extra), tuple(failed))


__all__ = ["BUILTIN", "ENTRY_POINT_GROUP", "PluginFailure", "Registry", "Section", "registry"]
