"""What a report section is: one unit with its options, its needs, its run, its figures, its template
partial and its contribution to the summary.

A section is a class with class attributes and a few methods; the pipeline, the report document and the
renderers only ever talk to sections through this interface, so adding one means writing one module, one
template partial and one line of the registry (:mod:`auditor.sections`).

The pipeline calls, for every enabled section in registry order:

1. ``Options(**table)`` then ``options.validate(where)`` when the configuration is built (before any model is
   loaded): bad values are input errors naming the file or option and the key;
2. ``setup(options, setup_context)`` once the model is loaded and before any forward pass: input errors that
   need the model (class matching, an external folder's content) are raised here;
3. ``run(context, options)`` after the clean pass: returns the section's result (a frozen dataclass), or
   ``None`` when there is nothing to report (the section is then absent from the report). An exception is
   recorded as a failed section; the rest of the report stands.

When one run audits several models, every model is audited first; then every enabled section's
``across_models(results, models, reference)`` may replace its results with ones that compare the models,
and only then is each report written.

Rendering calls ``figures(result)``, ``images(result)`` and the section's template partial; the summary
collects ``summary(result)``. None of them computes a number.
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

if TYPE_CHECKING:  # pragma: no cover - types only
    from .context import SectionContext, SetupContext

#: Ranks of summary warnings: the summary lists them in this order (stable within a rank), so a reviewer
#: reads first whether the numbers can be trusted at all, then what the model and data are, then findings.
RANK_BROKEN = 0  # the model or its input is broken: no number below means anything
RANK_PREPROCESSING = -1  # a wide preprocessing mismatch: the numbers are probably not the model's (first, even before a
#   "looks broken" line, which a wrong preprocessing also causes)
RANK_VALIDITY = 10  # the numbers may be wrong (e.g. preprocessing doubtful)
RANK_MODEL = 20  # facts about the model's output or loading
RANK_DATA = 30  # facts about the data set and class matching
RANK_FAILURES = 40  # analyses that failed
RANK_FINDINGS = 50  # what the analyses found (miscalibration, site gaps, ...)

#: What a section may ask for; the pipeline uses it to decide what to prepare and the README lists it.
NEEDS = ("clean_pass", "extra_passes", "images", "gradients", "train_pass")


@dataclass(frozen=True)
class Warning:
    """One summary warning and its rank (see the ``RANK_*`` constants)."""

    text: str
    rank: int = RANK_FINDINGS


@dataclass(frozen=True)
class Contribution:
    """What a section adds to the summary: headline numbers (JSON primitives) and warnings."""

    headline: Mapping[str, Any] = field(default_factory=dict)
    warnings: tuple[Warning, ...] = ()


@dataclass(frozen=True)
class ImageRef:
    """An image a section's partial shows as a thumbnail: ``root`` None means the audited data's root."""

    path: str
    root: str | None = None
    size: int = 128


#: ``where(key)`` names an option for an error message: the command-line flag it came from, or the config
#: file, table, key and line (``audit.toml: [sections.fisher] threshold (line 12)``).
Where = Callable[[str], str]


@dataclass(frozen=True)
class NoOptions:
    """Options of a section that has none. Options classes are frozen dataclasses with defaults and a
    ``validate(where)`` method that raises ``input_error(where(key), problem)`` for a value out of range."""

    def validate(self, where: Where) -> None:
        """Nothing to check."""


class Section(abc.ABC):
    """Base class of every report section. Subclasses set the class attributes and override methods."""

    #: identifier: the key in ``audit.json``'s ``results``, the config table ``[sections.<name>]``, the anchor
    name: ClassVar[str] = ""
    #: heading in the report (the partial's ``<h2>``, the contents entry and the PDF bookmark)
    title: ClassVar[str] = ""
    #: the ``id`` of the partial's ``<section>`` element, the target of the report's contents list; a subclass
    #: that sets ``name`` but not ``anchor`` gets the name with ``_`` replaced by ``-``
    anchor: ClassVar[str] = ""
    #: one line for ``--help``/README listings
    description: ClassVar[str] = ""
    #: the frozen dataclass of the section's options (defaults are the tool's defaults)
    Options: ClassVar[type] = NoOptions
    #: False: an opt-in section, run only when named in ``enable`` (``--enable``) or ``enabled`` (``--only``)
    default_enabled: ClassVar[bool] = True
    #: what the section needs from the pipeline, a subset of :data:`NEEDS`
    needs: ClassVar[frozenset[str]] = frozenset({"clean_pass"})
    #: the section's Jinja2 partial: a path relative to the templates folder, or an absolute path (plug-ins)
    template: ClassVar[str] = ""
    #: an optional partial shown inside the Summary (``inline``: a sentence joined into one paragraph)
    summary_template: ClassVar[str | None] = None
    summary_inline: ClassVar[bool] = False
    #: the frozen result dataclass (with ``to_dict``/``from_dict``) that ``run`` returns
    result_type: ClassVar[type | None] = None

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "name" in cls.__dict__ and "anchor" not in cls.__dict__:
            cls.anchor = cls.name.replace("_", "-")

    # ------------------------------------------------------------------ life cycle
    def setup(self, options: Any, ctx: SetupContext) -> Any:
        """Check inputs that need the loaded model, before any forward pass; return a plan for ``run``."""
        return None

    @abc.abstractmethod
    def run(self, ctx: SectionContext, options: Any) -> Any:
        """Compute the section's result from what the context offers (pure analyses do the arithmetic).

        Abstract: every section implements it (a plug-in without it fails to load and is recorded as such)."""

    def across_models(self, results: Sequence[Any], models: Sequence[str], reference: int) -> Sequence[Any]:
        """When several models are audited in one run: called once all are audited and before any report is
        written, with this section's result of every model (None where it did not run or failed), the models'
        names and the index of the reference model (the first, or ``--reference``). Returns the results to
        keep (the same ones by default); a section may add what needs the other models' results (the
        perturbation grid's mCE against the reference)."""
        return results

    # ------------------------------------------------------------------ presentation
    def figures(self, result: Any) -> dict[str, bytes]:
        """The section's figures as PNG bytes keyed by name (also their file names in ``figures/``)."""
        return {}

    def images(self, result: Any) -> dict[str, ImageRef]:
        """Thumbnails the partial shows, keyed as the partial looks them up in ``thumbs``."""
        return {}

    def summary(self, result: Any) -> Contribution:
        """Headline numbers and warnings for the report's summary."""
        return Contribution()

    # ------------------------------------------------------------------ persistence
    def to_json(self, result: Any) -> dict[str, Any]:
        """Where the result goes in ``audit.json``: ``{"results.<key>" or "<top-level key>": value}``.

        The default is ``results.<name>`` = ``result.to_dict()`` (``null`` when the section did not run).
        """
        return {f"results.{self.name}": None if result is None else result.to_dict()}

    def from_json(self, doc: Mapping[str, Any]) -> Any:
        """Rebuild the result from a whole ``audit.json`` document (``None`` when absent)."""
        raw = doc.get("results", {}).get(self.name)
        if raw is None or self.result_type is None:
            return None
        return self.result_type.from_dict(raw)  # type: ignore[attr-defined]

    def json_keys(self) -> tuple[str, ...]:
        """The ``audit.json`` keys this section owns (to keep unknown ones from newer versions)."""
        return tuple(self.to_json(None))

    def template_path(self, templates_dir: Path) -> Path:
        path = Path(self.template)
        return path if path.is_absolute() else templates_dir / path

    def __repr__(self) -> str:
        return f"<section {self.name}>"


def options_fields(options_type: type) -> Sequence[dataclasses.Field]:
    return dataclasses.fields(options_type) if dataclasses.is_dataclass(options_type) else ()
