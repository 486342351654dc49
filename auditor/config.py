"""The audit configuration: one frozen object, validated once at the boundary.

It is built from three sources with one set of names (the *option names* below), later ones overriding
earlier ones: a TOML config file (``--config``), keyword options of the Python API, and command-line flags.

Layout of the options (and of the config file)::

    models = ["model.keras"]          # general options: top-level keys
    data = "data/test"
    out = "audits"
    seed = 0
    disabled = ["fisher"]             # or enabled = [...]: only these sections
    [sections.calibration]            # one table per section, its own options
    bins = 15
    [sections.external_sites.sites]   # a table option: name = folder
    lab2 = "data/lab2"

:func:`build_config` turns such a mapping into :class:`AuditConfig`; :meth:`AuditConfig.to_dict` gives it
back (the effective configuration: the report's ``config``, and what ``--print-config`` prints as TOML).
"""

from __future__ import annotations

import dataclasses
import os
import re
import tomllib
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .errors import input_error
from .preprocess import SCALINGS
from .resize import PLAIN_NAMES, check_channels, check_crop, check_resize

PREPROCESS_CHOICES = ("auto", *SCALINGS)
RESIZE_CHOICES = PLAIN_NAMES  # the tf.image.resize names the preprocessing check tries; --resize takes every
# name of auditor.resize.METHODS. DEFAULT_RESIZE (bilinear) is keras.utils.image_dataset_from_directory's.
FORMAT_CHOICES = ("html", "pdf", "json")

#: general option name (config file, API) -> AuditConfig field, where they differ
RENAMED = {
    "models": "model_paths",
    "data": "data_path",
    "out": "out_dir",
    "format": "formats",
    "bootstrap": "n_bootstrap",
}
FIELD_TO_OPTION = {v: k for k, v in RENAMED.items()}
#: the command-line flag of each general option (for error messages)
FLAGS = {
    "models": "MODEL",
    "data": "DATA",
    "out": "--out",
    "format": "--format",
    "batch_size": "--batch-size",
    "seed": "--seed",
    "preprocess": "--preprocess",
    "resize": "--resize",
    "crop": "--crop",
    "channels": "--channels",
    "class_names": "--class-names",
    "unsafe_deserialization": "--unsafe-deserialization",
    "bootstrap": "--bootstrap",
    "gallery_size": "--gallery-size",
    "workers": "--workers",
    "strict": "--strict",
    "quiet": "--quiet",
    "enabled": "--only",
    "enable": "--enable",
    "disabled": "--disable",
    "reference": "--reference",
    "baseline": "--baseline",
    "junit": "--junit",
    "gates": "--gate",
    "model_card": "model_card",
}
#: general options given as a table (name = text) in the config file
TABLE_OPTIONS = ("model_card",)
MODEL_CARD_KEYS = ("intended_use", "limitations", "training_data", "ethical_considerations")


def _default_workers() -> int:
    return max(1, min(4, os.cpu_count() or 1))


@dataclass(frozen=True)
class AuditConfig:
    """Everything that decides what an audit computes and writes.

    ``preprocess="auto"`` and ``resize=None`` are resolved per model (sidecar first) by the pipeline;
    the effective values are recorded in the report. ``sections`` maps a section name to its options
    (a dict is turned into the section's options dataclass and validated); sections not named get their
    defaults. ``enabled`` (when given) lists the only sections to run; ``disabled`` the ones to skip.
    """

    model_paths: tuple[Path, ...]
    data_path: Path | None
    out_dir: Path = Path("audits")
    formats: tuple[str, ...] = FORMAT_CHOICES
    batch_size: int = 32
    seed: int = 0
    preprocess: str = "auto"
    resize: str | None = None
    crop: str | None = None  # none | center-square | center:F; None = sidecar, else none
    channels: str | None = None  # rgb | bgr; None = sidecar, else rgb
    class_names: tuple[str, ...] | None = None
    unsafe_deserialization: bool = False
    quiet: bool = False
    strict: bool = False
    n_bootstrap: int = 1000
    gallery_size: int = 12
    workers: int = field(default_factory=_default_workers)
    enabled: tuple[str, ...] | None = None
    enable: tuple[str, ...] = ()  # opt-in sections to run as well
    disabled: tuple[str, ...] = ()
    reference: str | None = None  # the reference model of cross-model comparisons (mCE); None = the first
    baseline: str | None = None  # PATH | latest | vN: the earlier audit to compare with (auditor.release)
    junit: Path | None = None  # where to write the gates as JUnit XML
    gates: tuple[str, ...] = ()  # release gates (auditor.gates), e.g. "accuracy >= 0.95"
    model_card: tuple[tuple[str, str], ...] = ()  # intended_use, limitations, training_data (model card)
    sections: Mapping[str, Any] = field(default_factory=dict)
    comparison: Any = None  # [comparison]: auditor.compare.ComparisonOptions (a table is validated into one)

    def __post_init__(self) -> None:
        _validate_general(
            {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}, lambda key: FLAGS.get(key, key)
        )
        object.__setattr__(
            self,
            "sections",
            _section_options(
                self.sections,
                self.enabled,
                self.disabled,
                enable=self.enable,
                general_where=lambda key: FLAGS.get(key, key),
                where=_flag_of,
                table_where=lambda name: f"[sections.{name}]",
            ),
        )
        from .compare import comparison_options

        object.__setattr__(
            self, "comparison", comparison_options(self.comparison, lambda key: f"[comparison] {key}".rstrip())
        )

    def require_inputs(self) -> None:
        """An audit needs at least one model and a data set (printing the configuration does not)."""
        if not self.model_paths:
            raise input_error("MODEL", "no model given", expected="at least one model file")
        if self.data_path is None:
            raise input_error("DATA", "no data folder or CSV given", expected="a class-per-folder directory")

    # ------------------------------------------------------------------ sections
    def options(self, name: str) -> Any:
        """The effective options of section ``name`` (its defaults when the configuration names none)."""
        return self.sections[name]

    def reference_index(self) -> int:
        """The index in ``model_paths`` of the reference model of cross-model comparisons (the first unless
        ``reference`` names another)."""
        return 0 if self.reference is None else _reference_index(self.reference, self.model_paths, "--reference")

    def is_enabled(self, name: str, default: bool = True) -> bool:
        """Whether section ``name`` runs: named in ``enabled`` (when given) or ``enable``, or on by ``default``
        when ``enabled`` is not given; never when named in ``disabled``."""
        if name in self.disabled:
            return False
        if name in self.enable:
            return True
        return name in self.enabled if self.enabled is not None else default

    # ------------------------------------------------------------------ output
    def to_dict(self) -> dict:
        """The effective configuration in option names (JSON primitives; ``None`` for unset values)."""
        d: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            if f.name in ("sections", "comparison"):
                continue
            d[FIELD_TO_OPTION.get(f.name, f.name)] = _plain(getattr(self, f.name))
        d["sections"] = {name: _plain_options(opts) for name, opts in self.sections.items()}
        d["comparison"] = _plain_options(self.comparison)
        return d


def _validate_general(v: Mapping[str, Any], where: Callable[[str], str]) -> None:
    """Check the general options (AuditConfig field names in ``v``); errors name ``where(option)``."""
    if v["batch_size"] < 1:
        raise input_error(where("batch_size"), f"{v['batch_size']} is not a positive integer")
    if v["preprocess"] not in PREPROCESS_CHOICES:
        raise input_error(
            where("preprocess"),
            f"unknown value {v['preprocess']!r}",
            expected="one of " + ", ".join(PREPROCESS_CHOICES),
        )
    if v["resize"] is not None:
        check_resize(v["resize"], where("resize"))
    if v["crop"] is not None:
        check_crop(v["crop"], where("crop"))
    if v["channels"] is not None:
        check_channels(v["channels"], where("channels"))
    if not v["formats"]:
        raise input_error(
            where("format"),
            "no output format given",
            expected="a comma-separated subset of " + ",".join(FORMAT_CHOICES),
        )
    bad = [f for f in v["formats"] if f not in FORMAT_CHOICES]
    if bad:
        raise input_error(
            where("format"),
            f"unknown format {bad[0]!r}",
            expected="a comma-separated subset of " + ",".join(FORMAT_CHOICES),
        )
    if v["class_names"] is not None:
        if any(not n for n in v["class_names"]):
            raise input_error(where("class_names"), "an empty class name", expected="names separated by commas")
        if len(set(v["class_names"])) != len(v["class_names"]):
            raise input_error(where("class_names"), "a class name is repeated")
    if v["n_bootstrap"] < 0:
        raise input_error(where("bootstrap"), f"{v['n_bootstrap']} is negative")
    if v["gallery_size"] < 0:
        raise input_error(where("gallery_size"), f"{v['gallery_size']} is negative")
    if v["workers"] < 1:
        raise input_error(where("workers"), f"{v['workers']} is not a positive integer")
    if v.get("gates"):
        from .gates import parse_gates

        parse_gates(v["gates"], where("gates"))
    for key, _ in v.get("model_card") or ():
        if key not in MODEL_CARD_KEYS:
            raise input_error(
                where("model_card"),
                f"unknown model-card field {key!r}",
                expected="one of " + ", ".join(MODEL_CARD_KEYS),
            )
    if v.get("reference") is not None and v.get("model_paths"):
        _reference_index(v["reference"], v["model_paths"], where("reference"))


def _reference_index(reference: str, model_paths: tuple[Path, ...], where: str) -> int:
    """The model ``reference`` names: a path as given (or the same file), or a file name (or stem) that only
    one of the models has."""
    paths = [Path(p) for p in model_paths]
    for i, p in enumerate(paths):
        if str(p) == reference or Path(reference) == p:
            return i
    for i, p in enumerate(paths):
        try:
            if Path(reference).resolve() == p.resolve():
                return i
        except OSError:  # pragma: no cover - unresolvable paths simply do not match
            pass
    by_name = [i for i, p in enumerate(paths) if reference in (p.name, p.stem)]
    if len(by_name) == 1:
        return by_name[0]
    given = ", ".join(str(p) for p in paths)
    if by_name:
        raise input_error(where, f"{reference!r} names {len(by_name)} of the models", expected=f"a path among {given}")
    raise input_error(where, f"{reference!r} is not one of the audited models", expected=f"one of {given}")


def _flag_of(section: str, key: str) -> str:
    flag = SECTION_FLAGS.get((section, key))
    return flag or f"[sections.{section}] {key}"


#: command-line flags that set a section option
SECTION_FLAGS = {
    ("preprocessing_check", "samples"): "--preprocess-check-samples",
    ("preprocessing_check", "space"): "--check-space",
    ("fisher", "threshold"): "--fisher-threshold",
    ("influence", "train"): "--train",
    ("influence", "method"): "--influence-method",
    ("gradcam", "layer"): "--cam-layer",
    ("gradcam", "method"): "--cam-method",
    ("selective_prediction", "target_accuracies"): "--target-accuracy",
    ("external_sites", "sites"): "--external",
    ("external_sites", "full"): "--sites-full",
    ("perturbation_grid", "perturbations"): "--perturbations",
    ("perturbation_grid", "severities"): "--perturb-severities",
    ("perturbation_grid", "samples"): "--perturb-samples",
    ("perturbation_grid", "precision"): "--perturb-precision",
    ("perturbation_grid", "breaking_drop"): "--breaking-drop",
    ("perturbation_grid", "adaptive"): "--perturb-full-grid",
}


def _plain(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 for v in value):
            return {str(k): _plain(v) for k, v in value}
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def _plain_options(opts: Any) -> dict:
    if not dataclasses.is_dataclass(opts):
        return dict(opts) if isinstance(opts, Mapping) else {}
    out = {}
    for f in dataclasses.fields(opts):
        value = getattr(opts, f.name)
        out[f.name] = {str(k): str(v) for k, v in value} if f.metadata.get("table") else _plain(value)
    return out


# ----------------------------------------------------------------------------------- sections


def _section_options(
    raw: Mapping[str, Any],
    enabled: tuple[str, ...] | None,
    disabled: tuple[str, ...],
    *,
    enable: tuple[str, ...] = (),
    general_where: Callable[[str], str],
    where: Callable[[str, str], str],
    table_where: Callable[[str], str],
) -> dict[str, Any]:
    """Every known section's options (defaults filled in), validated; unknown names are input errors."""
    from .sections import registry

    reg = registry()
    for key, names in (("enabled", enabled), ("enable", enable), ("disabled", disabled)):
        for name in names or ():
            if not reg.known(name):
                raise input_error(
                    general_where(key), f"unknown section {name!r}", expected="one of " + ", ".join(reg.names)
                )
    out: dict[str, Any] = {}
    for name in raw:
        if not reg.known(name):
            raise input_error(table_where(name), f"unknown section {name!r}", expected="one of " + ", ".join(reg.names))
    for section in reg.sections:
        given = raw.get(section.name)
        opts_type = section.Options
        if given is None:
            opts = opts_type()
        elif isinstance(given, opts_type):
            opts = given
        elif isinstance(given, Mapping):
            opts = options_from_mapping(opts_type, given, _bind(where, section.name), table_where(section.name))
        else:
            raise input_error(
                table_where(section.name), f"is {_describe(given)}", expected="a table of the section's options"
            )
        if hasattr(opts, "validate"):
            opts.validate(_bind(where, section.name))
        out[section.name] = opts
    for failed in reg.failed_plugins:  # a plug-in that did not load keeps its table as given
        if failed.name in raw:
            out[failed.name] = dict(raw[failed.name])
    return out


def _bind(where: Callable[[str, str], str], section: str) -> Callable[[str], str]:
    """``where`` with the section filled in: names one option of that section."""
    return lambda key: where(section, key)


def options_from_mapping(opts_type: type, values: Mapping[str, Any], where: Callable[[str], str], table: str) -> Any:
    """Build a section's options dataclass from a mapping, checking every key and value type."""
    fields = {f.name: f for f in dataclasses.fields(opts_type)} if dataclasses.is_dataclass(opts_type) else {}
    hints = typing.get_type_hints(opts_type) if fields else {}
    kwargs = {}
    for key, value in values.items():
        if key not in fields:
            raise input_error(
                where(key),
                f"unknown option {key!r} in {table}",
                expected="one of " + ", ".join(fields) if fields else "no options",
            )
        kwargs[key] = coerce(value, hints[key], where(key), table=bool(fields[key].metadata.get("table")))
    return opts_type(**kwargs)


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string", Path: "a path"}


def coerce(value: Any, annotation: Any, where: str, *, table: bool = False) -> Any:
    """Check ``value`` (from TOML, the API or a flag) against a type annotation and convert it.

    Supported: bool, int, float (an int is accepted), str, Path, ``X | None``, ``tuple[X, ...]`` (from a list)
    and, with ``table``, ``tuple[tuple[str, str], ...]`` from a table ``{name = value}``.
    """
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return coerce(value, inner[0], where, table=table)
    if table:
        if isinstance(value, Mapping):
            return tuple((str(k), str(v)) for k, v in value.items())
        if isinstance(value, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2 for p in value):
            return tuple((str(k), str(v)) for k, v in value)
        raise input_error(where, f"is {_describe(value)}", expected="a table of name = value")
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise input_error(where, f"is {_describe(value)}", expected="a list")
        return tuple(coerce(v, args[0], where) for v in value)
    if annotation is bool:
        if not isinstance(value, bool):
            raise input_error(where, f"is {_describe(value)}", expected="true or false")
        return value
    if annotation is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise input_error(where, f"is {_describe(value)}", expected="an integer")
        return value
    if annotation is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise input_error(where, f"is {_describe(value)}", expected="a number")
        return float(value)
    if annotation in (str, Path):
        if not isinstance(value, (str, Path)):
            raise input_error(where, f"is {_describe(value)}", expected=_TYPE_WORDS[annotation])
        return annotation(value)
    return value


def _describe(value: Any) -> str:
    if isinstance(value, bool):
        return f"{str(value).lower()} (a boolean)"
    if isinstance(value, (int, float)):
        return f"{value!r} (a number)"
    if isinstance(value, str):
        return f"{value!r} (a string)"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "a table"
    return f"a {type(value).__name__}"


# ----------------------------------------------------------------------------------- building


GENERAL_TYPES: dict[str, Any] = {
    "models": tuple[Path, ...],
    "data": Path,
    "out": Path,
    "format": tuple[str, ...],
    "batch_size": int,
    "seed": int,
    "preprocess": str,
    "resize": str,
    "crop": str,
    "channels": str,
    "class_names": tuple[str, ...],
    "unsafe_deserialization": bool,
    "bootstrap": int,
    "gallery_size": int,
    "workers": int,
    "strict": bool,
    "quiet": bool,
    "enabled": tuple[str, ...],
    "enable": tuple[str, ...],
    "disabled": tuple[str, ...],
    "reference": str,
    "baseline": str,
    "junit": Path,
    "gates": tuple[str, ...],
    "model_card": tuple[tuple[str, str], ...],
}


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def build_config(
    options: Mapping[str, Any],
    *,
    where: Callable[[str], str] | None = None,
    section_where: Callable[[str, str], str] | None = None,
    table_where: Callable[[str], str] | None = None,
) -> AuditConfig:
    """An :class:`AuditConfig` from options in their config-file names (general keys and ``sections``).

    ``where(key)``, ``section_where(section, key)`` and ``table_where(section)`` name an option's origin
    in error messages (a flag, or a file's key and line); the defaults name the flags.
    """
    where = where or (lambda key: FLAGS.get(key, key))
    section_where = section_where or _flag_of
    table_where = table_where or (lambda name: f"[sections.{name}]")
    kwargs: dict[str, Any] = {}
    for key, value in options.items():
        if key in ("sections", "comparison"):
            continue
        if key not in GENERAL_TYPES:
            raise input_error(
                where(key),
                f"unknown option {key!r}",
                expected="one of " + ", ".join(sorted(GENERAL_TYPES)) + ", [comparison] or [sections.NAME]",
            )
        kwargs[RENAMED.get(key, key)] = coerce(value, GENERAL_TYPES[key], where(key), table=key in TABLE_OPTIONS)
    sections = options.get("sections", {})
    if not isinstance(sections, Mapping):
        raise input_error(where("sections"), f"is {_describe(sections)}", expected="a table of section tables")
    kwargs.setdefault("model_paths", ())
    kwargs.setdefault("data_path", None)
    defaults = {
        f.name: _default(f) for f in dataclasses.fields(AuditConfig) if f.name not in ("model_paths", "data_path")
    }
    _validate_general({**defaults, **kwargs}, where)
    kwargs["sections"] = _section_options(
        sections,
        kwargs.get("enabled"),
        kwargs.get("disabled", ()),
        enable=kwargs.get("enable", ()),
        general_where=where,
        where=section_where,
        table_where=table_where,
    )
    if "comparison" in options:
        from .compare import comparison_options

        kwargs["comparison"] = comparison_options(
            options["comparison"], lambda key: where(f"comparison.{key}".rstrip("."))
        )
    return AuditConfig(**kwargs)


# ----------------------------------------------------------------------------------- config files


def load_config_file(
    path: Path,
) -> tuple[dict[str, Any], Callable[[str], str], Callable[[str, str], str], Callable[[str], str]]:
    """Read a TOML config file: its options and functions naming a key's file, table and line."""
    path = Path(path)
    if not path.is_file():
        raise input_error(f"--config {path}", "no such file", expected="a TOML configuration file")
    try:
        text = path.read_text(encoding="utf-8")
        data = tomllib.loads(text)
    except UnicodeDecodeError:
        raise input_error(path, "is not UTF-8 text", expected="a TOML configuration file") from None
    except tomllib.TOMLDecodeError as exc:
        raise input_error(path, f"is not valid TOML ({exc})") from None
    lines = _key_lines(text)

    def where(key: str) -> str:
        line = lines.get(((), key))
        return f"{path}: {key}" + (f" (line {line})" if line else "")

    def section_where(section: str, key: str) -> str:
        line = lines.get((("sections", section), key)) or lines.get((("sections", section, key), None))
        return f"{path}: [sections.{section}] {key}" + (f" (line {line})" if line else "")

    def table_where(section: str) -> str:
        line = lines.get((("sections", section), None))
        return f"{path}: [sections.{section}]" + (f" (line {line})" if line else "")

    return data, where, section_where, table_where


_HEADER = re.compile(r"^\s*\[\s*([^\[\]]+?)\s*\]\s*(#.*)?$")
_KEY = re.compile(r"^\s*(\"[^\"]*\"|'[^']*'|[A-Za-z0-9_\-.]+)\s*=")


def _key_lines(text: str) -> dict[tuple[tuple[str, ...], str | None], int]:
    """Line numbers of table headers ``(table, None)`` and keys ``(table, key)`` (simple TOML only)."""
    out: dict[tuple[tuple[str, ...], str | None], int] = {}
    table: tuple[str, ...] = ()
    for no, line in enumerate(text.splitlines(), start=1):
        m = _HEADER.match(line)
        if m:
            table = tuple(part.strip().strip("\"'") for part in m.group(1).split("."))
            out.setdefault((table, None), no)
            continue
        m = _KEY.match(line)
        if m:
            parts = [p.strip().strip("\"'") for p in m.group(1).split(".")]
            full = table + tuple(parts[:-1])
            out.setdefault((full, parts[-1]), no)
    return out


def to_toml(config: AuditConfig) -> str:
    """The effective configuration as a TOML file that ``--config`` reads back to the same audit."""
    d = config.to_dict()
    lines = ["# wbc-audit configuration (wbc-audit --print-config). Paths are relative to the working folder.", ""]
    for key, value in d.items():
        if key in ("sections", "comparison") or value is None:
            continue
        lines.append(f"{key} = {_toml_value(value)}")
    comparison = d.get("comparison") or {}
    lines += ["", "[comparison]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in comparison.items() if not isinstance(v, dict) and v is not None]
    for tname, tvalue in comparison.items():
        if isinstance(tvalue, dict) and tvalue:
            lines += ["", f"[comparison.{tname}]"]
            lines += [
                f"{_toml_key(k)} = {tvalue_k}" for k, tvalue_k in ((k, _toml_number(v)) for k, v in tvalue.items())
            ]
    for name, opts in d["sections"].items():
        scalars = {k: v for k, v in opts.items() if not isinstance(v, dict) and v is not None}
        tables = {k: v for k, v in opts.items() if isinstance(v, dict)}
        lines += ["", f"[sections.{name}]"] + [f"{k} = {_toml_value(v)}" for k, v in scalars.items()]
        for tname, tvalue in tables.items():
            if not tvalue:
                continue
            lines += ["", f"[sections.{name}.{tname}]"]
            lines += [f"{_toml_key(k)} = {_toml_value(v)}" for k, v in tvalue.items()]
    return "\n".join(lines) + "\n"


def _toml_number(value: str) -> str:
    """A comparison weight or bound (kept as text in the options) as a TOML number when it reads as one."""
    try:
        return repr(float(value))
    except ValueError:
        return _toml_value(value)


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else _toml_value(key)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        escaped = value.replace("\\", "\\\\").replace('"', '\\"')
        escaped = "".join(ch if ch >= " " else f"\\u{ord(ch):04x}" for ch in escaped)
        return f'"{escaped}"'
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):  # an inline table (model_card)
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"cannot write {type(value).__name__} as TOML")


def parse_csv_option(value: str | None) -> tuple[str, ...] | None:
    """Split ``a,b , c`` into ``("a", "b", "c")``; ``None`` or blank gives ``None``."""
    if value is None or not value.strip():
        return None
    return tuple(part.strip() for part in value.split(","))
