"""External sites: the same model on other laboratories' labelled images; gaps, shift score, leakage."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..analyses.calibration import CalibrationResult, compute_calibration
from ..analyses.fisher import FisherResult, compute_fisher
from ..analyses.selective import SelectiveResult, compute_selective
from ..analyses.sites import SiteData, SitesResult, compute_sites
from ..classes import match_site_classes
from ..data import DatasetIndex, Skipped, discover, fingerprint
from ..errors import input_error
from ..report import figures
from .base import RANK_FINDINGS, Contribution, ImageRef, Section, Warning, Where
from .common import predictions_table
from .context import CleanPass, SectionContext, SetupContext


def safe_name(name: str) -> str:
    """A file-name-safe version of a site name."""
    out = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in name).strip("._")
    return out or "site"


@dataclass(frozen=True)
class ExternalSitesOptions:
    sites: tuple[tuple[str, str], ...] = field(default=(), metadata={"table": True})  # name -> folder
    full: bool = False  # also run Fisher, calibration and selective prediction on every site

    def validate(self, where: Where) -> None:
        seen: set[str] = set()
        for name, path in self.sites:
            if not name or not str(path):
                raise input_error(where("sites"), f"{name}={path} lacks a name or a folder", expected="NAME=DIR")
            if name.casefold() in seen:
                raise input_error(where("sites"), f"two sites are named {name!r}", expected="a distinct name per site")
            if name.casefold() == "internal":
                raise input_error(where("sites"), "the name 'internal' is taken by the main data set")
            seen.add(name.casefold())


@dataclass(frozen=True)
class SiteSample:
    """One image of the side-by-side strip of sites."""

    site: str
    root: str
    path: str
    label: str

    def to_dict(self) -> dict:
        return {"site": self.site, "root": self.root, "path": self.path, "label": self.label}


@dataclass(frozen=True)
class SiteDetail:
    """The later sections run on one external site (``full``)."""

    site: str
    fisher: FisherResult | None
    calibration: CalibrationResult | None
    selective: SelectiveResult | None

    def to_dict(self) -> dict:
        return {
            "site": self.site,
            "fisher": self.fisher.to_dict() if self.fisher else None,
            "calibration": self.calibration.to_dict() if self.calibration else None,
            "selective_prediction": self.selective.to_dict() if self.selective else None,
        }

    @classmethod
    def from_dict(cls, d: dict) -> SiteDetail:
        return cls(
            d["site"],
            FisherResult.from_dict(d["fisher"]) if d.get("fisher") else None,
            CalibrationResult.from_dict(d["calibration"]) if d.get("calibration") else None,
            SelectiveResult.from_dict(d["selective_prediction"]) if d.get("selective_prediction") else None,
        )


@dataclass(frozen=True)
class ExternalSitesResult:
    sites: SitesResult
    details: tuple[SiteDetail, ...]
    samples: tuple[SiteSample, ...]
    info: tuple[dict, ...]  # per site: path, counts, fingerprint, skipped files, unknown classes, leaks

    def to_dict(self) -> dict:
        return {"external_sites": self.sites.to_dict(), "external_sites_full": [d.to_dict() for d in self.details]}


@dataclass(frozen=True)
class SitePlan:
    """A site's folder, its index restricted to known classes, and its class matching."""

    name: str
    path: Path
    index: DatasetIndex
    mapping: dict[str, int]
    unknown: tuple[str, ...]


class ExternalSitesSection(Section):
    name = "external_sites"
    title = "External sites"
    description = "per-site accuracy with intervals, gap to internal, label-free shift score, leakage"
    Options = ExternalSitesOptions
    needs = frozenset({"clean_pass", "extra_passes"})
    template = "sections/external_sites.html"
    result_type = ExternalSitesResult

    def setup(self, options: ExternalSitesOptions, ctx: SetupContext) -> list[SitePlan]:
        """Index every site and match its classes by name, before any model time is spent."""
        plans = []
        for name, path in options.sites:
            where = f"--external {name}={path}"
            if not Path(path).is_dir():
                raise input_error(where, "no such directory", expected="a class-per-folder directory")
            full = discover(Path(path))
            if not full.samples:
                raise input_error(where, "holds no image file")
            labels = [lab for lab, n in full.counts().items() if n > 0]
            mapping, unknown = match_site_classes(ctx.model_classes, labels_with_images=labels, site=name, path=path)
            keep = tuple(s for s in full.samples if s.label in mapping)
            left_out = tuple(
                Skipped(s.rel, f"class '{s.label}' is not one of the model's classes")
                for s in full.samples
                if s.label not in mapping
            )
            index = DatasetIndex(
                full.root,
                full.source,
                keep,
                full.skipped + left_out,
                tuple(lab for lab in full.labels if lab in mapping),
                full.empty_labels,
            )
            plans.append(SitePlan(name, Path(path), index, mapping, unknown))
        return plans

    def run(self, ctx: SectionContext, options: ExternalSitesOptions) -> ExternalSitesResult | None:
        plans: list[SitePlan] = ctx.plan or []
        if not plans:
            return None
        cp, names, samples = ctx.clean, ctx.class_names, ctx.index.samples
        internal_hashes = {h: samples[i].rel for i, h in zip(cp.sample_idx, cp.hashes)}
        passes: list[CleanPass] = []
        leaks: list[list[tuple[str, str]]] = []
        for plan in plans:
            site_cp = ctx.model.pass_over(
                plan.index,
                data_to_model=plan.mapping,
                stage=f"site {plan.name}"[:24],
                data_path=f"--external {plan.name}={plan.path}",
            )
            passes.append(site_cp)
            leaks.append(
                [
                    (plan.index.samples[i].rel, internal_hashes[h])
                    for i, h in zip(site_cp.sample_idx, site_cp.hashes)
                    if h in internal_hashes
                ]
            )
            ctx.add_table(f"sites/{safe_name(plan.name)}.csv", predictions_table(plan.index.samples, site_cp, names))
        result = compute_sites(
            SiteData("internal", cp.y_true, cp.probs, cp.features),
            [SiteData(p.name, s.y_true, s.probs, s.features) for p, s in zip(plans, passes)],
            class_names=names,
            leaks={p.name: len(lk) for p, lk in zip(plans, leaks)},
            n_bootstrap=ctx.config.n_bootstrap,
            seed=ctx.seed,
        )
        details = []
        if options.full:
            fisher_opts, sel_opts = ctx.options_of("fisher"), ctx.options_of("selective_prediction")
            cal_opts = ctx.options_of("calibration")
            for plan, s in zip(plans, passes):
                details.append(
                    SiteDetail(
                        site=plan.name,
                        fisher=ctx.attempt(
                            f"fisher ({plan.name})",
                            compute_fisher,
                            s.y_true,
                            s.probs,
                            class_names=names,
                            features=s.features_or_none,
                            threshold=fisher_opts.threshold,
                            n_top=0,
                            single_output=ctx.model.single_output,
                        ),
                        calibration=ctx.attempt(
                            f"calibration ({plan.name})",
                            compute_calibration,
                            s.y_true,
                            s.probs,
                            n_bins=cal_opts.bins,
                            seed=ctx.seed,
                        ),
                        selective=ctx.attempt(
                            f"selective_prediction ({plan.name})",
                            compute_selective,
                            s.y_true,
                            s.probs,
                            targets=sel_opts.target_accuracies,
                        ),
                    )
                )
        strip = _site_strip(
            [("internal", ctx.index, cp)] + [(p.name, p.index, s) for p, s in zip(plans, passes)], names, ctx.seed
        )
        info = tuple(_site_info(p, s, lk) for p, s, lk in zip(plans, passes, leaks))
        return ExternalSitesResult(result, tuple(details), tuple(strip), info)

    def figures(self, result: ExternalSitesResult) -> dict[str, bytes]:
        if len(result.sites.rows) <= 1:
            return {}
        return {
            "site_recall": figures.site_recall_heatmap(result.sites),
            "site_confusions": figures.site_confusions(result.sites),
        }

    def images(self, result: ExternalSitesResult) -> dict[str, ImageRef]:
        return {f"site:{i}": ImageRef(s.path, root=s.root, size=112) for i, s in enumerate(result.samples)}

    def summary(self, result: ExternalSitesResult) -> Contribution:
        warnings = []
        for info in result.info:
            if info["leaked"]:
                first = info["leaked"][0]
                warnings.append(
                    f"Leakage: site {info['name']} shares {len(info['leaked'])} byte-identical image(s) "
                    f"with the internal set (e.g. {first['site_path']} = {first['internal_path']})."
                )
            if info["unknown_classes"]:
                warnings.append(
                    f"Site {info['name']}: class folder(s) {', '.join(info['unknown_classes'])} unknown "
                    "to the model were left out."
                )
        headline: dict[str, Any] = {}
        rows = result.sites.rows
        if len(rows) > 1:
            headline["sites"] = [
                {
                    "name": row.name,
                    "accuracy": row.metrics.accuracy,
                    "accuracy_gap": row.accuracy_gap,
                    "shift_score": row.shift_score,
                }
                for row in rows[1:]
            ]
            worst = max(rows[1:], key=lambda row: row.accuracy_gap)
            if worst.accuracy_gap > 0.05:
                warnings.append(
                    f"External site {worst.name}: accuracy {worst.metrics.accuracy:.1%}, "
                    f"{worst.accuracy_gap * 100:.1f} points below internal (see External sites)."
                )
        return Contribution(headline=headline, warnings=tuple(Warning(w, RANK_FINDINGS) for w in warnings))

    def to_json(self, result: ExternalSitesResult | None) -> dict[str, Any]:
        return {
            "results.external_sites": result.sites.to_dict() if result else None,
            "results.external_sites_full": [d.to_dict() for d in result.details] if result else [],
            "external_sites": list(result.info) if result else [],
            "site_samples": [s.to_dict() for s in result.samples] if result else [],
        }

    def from_json(self, doc: Mapping[str, Any]) -> ExternalSitesResult | None:
        res = doc.get("results", {})
        if not res.get("external_sites"):
            return None
        return ExternalSitesResult(
            SitesResult.from_dict(res["external_sites"]),
            tuple(SiteDetail.from_dict(s) for s in res.get("external_sites_full", [])),
            tuple(SiteSample(**s) for s in doc.get("site_samples", [])),
            tuple(doc.get("external_sites", [])),
        )


def _site_info(plan: SitePlan, cp: CleanPass, leaks: list[tuple[str, str]]) -> dict:
    """Per-site facts for the report: path, counts, skipped files, leakage, fingerprint."""
    idx = plan.index
    skipped = sorted([(s.rel, s.reason) for s in idx.skipped] + list(cp.failed))
    return {
        "name": plan.name,
        "path": str(plan.path),
        "n_images": len(cp.sample_idx),
        "fingerprint": fingerprint(
            [(idx.samples[i].rel, idx.samples[i].label, h) for i, h in cp.all_hashes.items() if h]
        ),
        "counts": {lab: int(n) for lab, n in idx.counts().items()},
        "unknown_classes": list(plan.unknown),
        "skipped": [{"path": p, "reason": why} for p, why in skipped],
        "leaked": [{"site_path": a, "internal_path": b} for a, b in leaks],
    }


def _site_strip(
    datasets: list[tuple[str, DatasetIndex, CleanPass]], names: tuple[str, ...], seed: int, per_site: int = 5
) -> list[SiteSample]:
    """A few images of each data set, one per class in turn (seeded), for the side-by-side strip."""
    rng = np.random.default_rng(seed)
    out = []
    for site_name, index, cp in datasets:
        by_class: dict[int, list[int]] = {}
        for j, c in enumerate(cp.y_true):
            by_class.setdefault(int(c), []).append(j)
        picks = [by_class[c][int(rng.integers(len(by_class[c])))] for c in sorted(by_class)]
        for j in picks[:per_site]:
            out.append(SiteSample(site_name, str(index.root), index.samples[cp.sample_idx[j]].rel, names[cp.y_true[j]]))
    return out
