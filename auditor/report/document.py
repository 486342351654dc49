"""The audit report as data: what every renderer (JSON, HTML, PDF) reads and none changes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..analyses._common import jsonable
from ..analyses.calibration import CalibrationResult
from ..analyses.dataquality import DataQuality
from ..analyses.fisher import FisherResult
from ..analyses.metrics import ClassificationMetrics
from ..analyses.model_sanity import ModelSanity
from ..analyses.preprocessing import PreprocessingCheck
from ..analyses.selective import SelectiveResult
from ..analyses.sites import SitesResult


@dataclass(frozen=True)
class Failure:
    """An analysis that raised: recorded and shown, not fatal (``--strict`` makes it exit 1)."""

    analysis: str
    error: str

    def to_dict(self) -> dict:
        return {"analysis": self.analysis, "error": self.error}


@dataclass(frozen=True)
class GalleryItem:
    """One image of a gallery: ``index`` into predictions.csv rows, and what the model said."""

    index: int
    path: str
    true_label: str
    predicted_label: str
    confidence: float
    true_probability: float

    def to_dict(self) -> dict:
        return jsonable(self)


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
    """The later sections run on one external site (``--sites-full``)."""

    site: str
    fisher: FisherResult | None
    calibration: CalibrationResult | None
    selective: SelectiveResult | None

    def to_dict(self) -> dict:
        return {"site": self.site, "fisher": self.fisher.to_dict() if self.fisher else None,
                "calibration": self.calibration.to_dict() if self.calibration else None,
                "selective_prediction": self.selective.to_dict() if self.selective else None}

    @classmethod
    def from_dict(cls, d: dict) -> "SiteDetail":
        return cls(d["site"], FisherResult.from_dict(d["fisher"]) if d.get("fisher") else None,
                   CalibrationResult.from_dict(d["calibration"]) if d.get("calibration") else None,
                   SelectiveResult.from_dict(d["selective_prediction"]) if d.get("selective_prediction") else None)


@dataclass(frozen=True)
class AuditReport:
    schema_version: int
    report_id: str
    tool_version: str
    created_utc: str
    model: dict[str, Any]
    preprocessing: dict[str, Any]
    classes: dict[str, Any]
    dataset: dict[str, Any]
    environment: dict[str, Any]
    config: dict[str, Any]
    summary: dict[str, Any]
    data_quality: DataQuality
    classification: ClassificationMetrics | None = None
    preprocessing_check: PreprocessingCheck | None = None
    mistakes: tuple[GalleryItem, ...] = ()
    fisher: FisherResult | None = None
    fisher_gallery: tuple[GalleryItem, ...] = ()
    calibration: CalibrationResult | None = None
    selective: SelectiveResult | None = None
    sites: SitesResult | None = None
    site_details: tuple[SiteDetail, ...] = ()
    site_samples: tuple[SiteSample, ...] = ()
    site_info: tuple[dict, ...] = ()
    failures: tuple[Failure, ...] = ()
    timings: dict[str, float] = field(default_factory=dict)
    model_sanity: ModelSanity | None = None

    def to_dict(self) -> dict:
        return jsonable({
            "schema_version": self.schema_version, "report_id": self.report_id,
            "tool_version": self.tool_version, "created_utc": self.created_utc,
            "model": self.model, "preprocessing": self.preprocessing, "classes": self.classes,
            "dataset": self.dataset, "environment": self.environment, "config": self.config,
            "summary": self.summary, "data_quality": self.data_quality.to_dict(),
            "results": {
                "model_sanity": self.model_sanity.to_dict() if self.model_sanity else None,
                "classification": self.classification.to_dict() if self.classification else None,
                "preprocessing_check": self.preprocessing_check.to_dict() if self.preprocessing_check else None,
                "most_confident_mistakes": [m.to_dict() for m in self.mistakes],
                "fisher": self.fisher.to_dict() if self.fisher else None,
                "highest_fisher_images": [m.to_dict() for m in self.fisher_gallery],
                "calibration": self.calibration.to_dict() if self.calibration else None,
                "selective_prediction": self.selective.to_dict() if self.selective else None,
                "external_sites": self.sites.to_dict() if self.sites else None,
                "external_sites_full": [s.to_dict() for s in self.site_details],
            },
            "external_sites": list(self.site_info),
            "site_samples": [s.to_dict() for s in self.site_samples],
            "failures": [f.to_dict() for f in self.failures],
            "timings_seconds": self.timings,
        })

    @classmethod
    def from_dict(cls, d: dict) -> "AuditReport":
        res = d["results"]
        return cls(
            schema_version=d["schema_version"], report_id=d["report_id"], tool_version=d["tool_version"],
            created_utc=d["created_utc"], model=d["model"], preprocessing=d["preprocessing"],
            classes=d["classes"], dataset=d["dataset"], environment=d["environment"], config=d["config"],
            summary=d["summary"], data_quality=DataQuality.from_dict(d["data_quality"]),
            classification=(ClassificationMetrics.from_dict(res["classification"])
                            if res.get("classification") else None),
            preprocessing_check=(PreprocessingCheck.from_dict(res["preprocessing_check"])
                                 if res.get("preprocessing_check") else None),
            mistakes=tuple(GalleryItem(**m) for m in res.get("most_confident_mistakes", [])),
            fisher=FisherResult.from_dict(res["fisher"]) if res.get("fisher") else None,
            fisher_gallery=tuple(GalleryItem(**m) for m in res.get("highest_fisher_images", [])),
            calibration=CalibrationResult.from_dict(res["calibration"]) if res.get("calibration") else None,
            selective=(SelectiveResult.from_dict(res["selective_prediction"])
                       if res.get("selective_prediction") else None),
            sites=SitesResult.from_dict(res["external_sites"]) if res.get("external_sites") else None,
            site_details=tuple(SiteDetail.from_dict(s) for s in res.get("external_sites_full", [])),
            site_samples=tuple(SiteSample(**s) for s in d.get("site_samples", [])),
            site_info=tuple(d.get("external_sites", [])),
            failures=tuple(Failure(**f) for f in d.get("failures", [])),
            timings=d.get("timings_seconds", {}),
            model_sanity=ModelSanity.from_dict(res["model_sanity"]) if res.get("model_sanity") else None,
        )
