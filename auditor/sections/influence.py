"""Influence and training-data quality: the training images that help or hurt each test image, the training
labels to re-check, and leakage between training and test (see :mod:`auditor.analyses.influence`)."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..analyses.influence import (
    DEFAULT_DAMPING,
    DEFAULT_METHOD,
    DEFAULT_TOP_K,
    EXACT_LIMIT,
    METHODS,
    NEAR_DUPLICATE_COSINE,
    NEAR_DUPLICATE_PIXELS,
    DuplicatePair,
    InfluenceImage,
    InfluenceResult,
    LabelIssueRow,
    TestInfluence,
    agreement_with_exact,
    fit_influence,
    label_issues,
    near_duplicates,
    pixel_signature,
    top_lists,
)
from ..data import DatasetIndex, discover, load_sample
from ..errors import input_error
from .base import RANK_DATA, RANK_FINDINGS, Contribution, ImageRef, Section, Warning, Where
from .context import CleanPass, SectionContext, SetupContext, Table

ENABLE_HINT = (
    "Not run: give the training images with --train DIR (or a path,label CSV; [sections.influence] train in the "
    "config file) to see which training images help or hurt each test image, the training labels to re-check, "
    "and leakage between training and test."
)
REPRODUCE_TOL = 1e-3  # the last layer's W, b must give the model's probabilities to within this
AGREEMENT_TESTS = 8  # test images shown on which the large-layer solver is checked against the exact solve


@dataclass(frozen=True)
class InfluenceOptions:
    train: str = ""  # the training images (folder or CSV); empty: the section says how to enable it
    method: str = DEFAULT_METHOD  # seed | tracin-last | if-last
    damping: float = DEFAULT_DAMPING  # relative to the mean curvature (if-last)
    top_k: int = DEFAULT_TOP_K  # helpful and harmful training images shown per test image
    misclassified: int = 16  # the chosen test images: the misclassified (at most this many, highest Fisher first),
    high_fisher: int = 8  # the highest Fisher scores among the rest,
    per_class: int = 1  # and this many correct images per class (the most confident)
    near_threshold: float = NEAR_DUPLICATE_COSINE  # feature cosine (mean-centred): near-duplicate candidates
    pixel_threshold: float = NEAR_DUPLICATE_PIXELS  # grey 32x32 correlation that confirms a candidate
    label_issues_shown: float = 0.05  # share of the training set shown in the label-issue table (at most 40 rows)
    exact_limit: int = EXACT_LIMIT  # last-layer parameters up to which if-last solves the Hessian exactly

    def validate(self, where: Where) -> None:
        if self.method not in METHODS:
            raise input_error(where("method"), f"{self.method!r} is not a method", expected=" | ".join(METHODS))
        if not self.damping > 0:
            raise input_error(where("damping"), f"{self.damping} is not positive", expected="a damping above 0")
        if not 1 <= self.top_k <= 20:
            raise input_error(where("top_k"), f"{self.top_k} is outside [1, 20]")
        for key in ("misclassified", "high_fisher", "per_class"):
            if getattr(self, key) < 0:
                raise input_error(where(key), f"{getattr(self, key)} is negative", expected="0 or more")
        if not 0 < self.near_threshold <= 1:
            raise input_error(where("near_threshold"), f"{self.near_threshold} is outside (0, 1]")
        if not 0 < self.pixel_threshold <= 1:
            raise input_error(where("pixel_threshold"), f"{self.pixel_threshold} is outside (0, 1]")
        if self.exact_limit < 0:
            raise input_error(where("exact_limit"), f"{self.exact_limit} is negative", expected="0 or more")
        if not 0 < self.label_issues_shown <= 1:
            raise input_error(where("label_issues_shown"), f"{self.label_issues_shown} is outside (0, 1]")


@dataclass(frozen=True)
class TrainPlan:
    path: Path
    index: DatasetIndex
    mapping: dict[str, int]


class InfluenceSection(Section):
    name = "influence"
    title = "Influence and training-data quality"
    description = "training images that help or hurt each test image, labels to re-check, train/test leakage"
    Options = InfluenceOptions
    needs = frozenset({"clean_pass", "train_pass"})
    template = "sections/influence.html"
    result_type = InfluenceResult

    def setup(self, options: InfluenceOptions, ctx: SetupContext) -> TrainPlan | None:
        """Index the training images and check their classes, before any model time is spent."""
        if not options.train:
            return None
        where = f"--train {options.train}"
        path = Path(options.train)
        if not path.exists():
            raise input_error(where, "no such file or directory", expected="a class-per-folder directory or a CSV")
        index = discover(path)
        if not index.samples:
            raise input_error(where, "holds no image file")
        train_labels = sorted(lab for lab, n in index.counts().items() if n > 0)
        test_labels = sorted(lab for lab, n in ctx.index.counts().items() if n > 0)
        if set(train_labels) != set(test_labels) or any(lab not in ctx.model_classes for lab in train_labels):
            raise input_error(
                where,
                f"has classes {', '.join(train_labels)} but the test data has {', '.join(test_labels)}",
                expected="the same class names as the test data",
            )
        return TrainPlan(path, index, {lab: ctx.model_classes.index(lab) for lab in train_labels})

    def run(self, ctx: SectionContext, options: InfluenceOptions) -> InfluenceResult:
        plan: TrainPlan | None = ctx.plan
        if plan is None:
            return InfluenceResult(status="not_enabled", reason=ENABLE_HINT)
        cp, names = ctx.clean, ctx.class_names
        if cp.features_or_none is None and ctx.model.info.format == "savedmodel":
            note = ctx.model.last_dense()[2]
            return InfluenceResult(
                status="cannot_run",
                reason=f"The model gives no penultimate features ({note}); influence on the last layer needs them, "
                "and a SavedModel's layers cannot be read to say whether its last layer is a dense one. Give the "
                ".keras file of the same model.",
                train_path=str(plan.path),
            )
        tcp = ctx.model.pass_over(
            plan.index, data_to_model=plan.mapping, stage="training pass", data_path=f"--train {plan.path}"
        )
        t0 = time.perf_counter()
        single = ctx.model.single_output
        method, note = options.method, ""
        if method != "seed":
            reason = _last_layer_problem(ctx, tcp, single) if cp.features_or_none is not None else ""
            if cp.features_or_none is None:
                reason = (
                    "The model's last trainable layer is not a dense layer on a feature vector "
                    f"({ctx.model.last_dense()[2]})"
                )
            if reason:
                method, note = "seed", f"{reason}, so the last-layer methods cannot run: seed instead."
        model = fit_influence(
            tcp.features,
            tcp.y_true,
            tcp.probs,
            method=method,
            damping=options.damping,
            binary=single,
            exact_limit=options.exact_limit,
        )
        if model.solver == "exact":
            note = f"Exact solve of the damped Hessian ({model.n_params} parameters)."
        elif model.solver == "hybrid":
            note = (
                f"The last layer has {model.n_params} parameters, too many for the exact solve: it is solved exactly "
                f"on the {model.n_top} feature directions that carry the most curvature and through a Kronecker "
                "factorisation (feature covariance x class covariance, with EK-FAC's eigenvalue correction) on the "
                "rest, an approximation whose ranking can differ from the exact one."
            )
        chosen, why = _chosen(cp, options)
        lists = top_lists(model, cp.features, cp.y_true, cp.probs, chosen=chosen, k=options.top_k, binary=single)
        agreement = None
        if model.solver == "hybrid" and len(chosen):
            sub = chosen[:AGREEMENT_TESTS]
            agreement = agreement_with_exact(
                model,
                tcp.y_true,
                tcp.probs,
                cp.features[sub],
                cp.y_true[sub],
                cp.probs[sub],
                k=options.top_k,
                binary=single,
            )
        self_inf = model.self_scores()
        issues = label_issues(tcp.y_true, tcp.probs, self_inf)
        seconds = time.perf_counter() - t0

        tsamples, samples = plan.index.samples, ctx.index.samples
        tpred = tcp.probs.argmax(axis=1)
        pred = cp.probs.argmax(axis=1)

        def train_image(row: int, score: float) -> InfluenceImage:
            return InfluenceImage(
                int(row), tsamples[tcp.sample_idx[row]].rel, names[tcp.y_true[row]], names[tpred[row]], float(score)
            )

        tests = tuple(
            TestInfluence(
                index=int(t),
                path=samples[cp.sample_idx[t]].rel,
                label=names[cp.y_true[t]],
                predicted=names[pred[t]],
                confidence=float(cp.probs[t, pred[t]]),
                why=why[j],
                helpful=tuple(train_image(r, s) for r, s in zip(lists.helpful[j], lists.helpful_scores[j]) if s > 0),
                harmful=tuple(train_image(r, s) for r, s in zip(lists.harmful[j], lists.harmful_scores[j]) if s < 0),
            )
            for j, t in enumerate(chosen)
        )
        worst = np.argsort(lists.total, kind="stable")[: options.top_k * 2]
        most_harmful = tuple(train_image(r, lists.total[r]) for r in worst if lists.total[r] < 0)
        n_show = min(40, max(1, int(np.ceil(options.label_issues_shown * len(tcp.y_true)))))
        rows = [
            LabelIssueRow(
                row=int(r),
                path=tsamples[tcp.sample_idx[r]].rel,
                given=names[tcp.y_true[r]],
                predicted=names[tpred[r]],
                suggested=names[issues.suggested[r]] if issues.suggested[r] >= 0 else None,
                p_given=float(tcp.probs[r, tcp.y_true[r]]),
                self_influence=float(self_inf[r]),
                score=float(issues.score[r]),
            )
            for r in issues.order
        ]
        ctx.add_table(
            "influence/label_issues.csv",
            Table(
                [
                    "rank",
                    "path",
                    "given_label",
                    "predicted_label",
                    "confident_suggestion",
                    "p_given",
                    "self_influence",
                    "score",
                ],
                [
                    [
                        str(i + 1),
                        x.path,
                        x.given,
                        x.predicted,
                        x.suggested or "",
                        f"{x.p_given:.6f}",
                        f"{x.self_influence:.6g}",
                        f"{x.score:.6f}",
                    ]
                    for i, x in enumerate(rows)
                ],
            ),
        )
        exact, near, two, n_candidates = _leakage(plan.index, tcp, ctx.index, cp, names, options)
        return InfluenceResult(
            status="ok",
            method=method,
            requested_method=options.method,
            method_note=note,
            solver=model.solver,
            damping=options.damping,
            damping_value=model.damping_value,
            n_params=model.n_params,
            train_path=str(plan.path),
            n_train=len(tcp.y_true),
            n_test=len(cp.y_true),
            train_skipped=tuple(sorted([(s.rel, s.reason) for s in plan.index.skipped] + list(tcp.failed))),
            train_accuracy=float(np.mean(tpred == tcp.y_true)),
            tests=tests,
            most_harmful=most_harmful,
            label_issues=tuple(rows[:n_show]),
            n_confident_disagreements=int(issues.confident_disagreement.sum()),
            exact=exact,
            near=near,
            two_labels=two,
            near_threshold=options.near_threshold,
            pixel_threshold=options.pixel_threshold,
            n_near_candidates=n_candidates,
            near_checked=cp.features_or_none is not None,
            seconds=round(seconds, 3),
            kfac_agreement=None if agreement is None else agreement.spearman,
            kfac_top_overlap=None if agreement is None else agreement.top_overlap,
            agreement_tests=0 if agreement is None else agreement.n_test,
            top_k=options.top_k,
        )

    def images(self, result: InfluenceResult) -> dict[str, ImageRef]:
        if result.status != "ok":
            return {}
        root = _train_root(result.train_path)
        out: dict[str, ImageRef] = {}
        for t in result.tests:
            out[f"data:{t.index}"] = ImageRef(t.path)
            for im in t.helpful + t.harmful:
                out[f"train:{im.path}"] = ImageRef(im.path, root=root, size=96)
        for im in result.most_harmful:
            out[f"train:{im.path}"] = ImageRef(im.path, root=root, size=96)
        for row in result.label_issues:
            out[f"train:{row.path}"] = ImageRef(row.path, root=root, size=96)
        for pair in result.exact + result.near + result.two_labels:
            out[f"train:{pair.train_path}"] = ImageRef(pair.train_path, root=root, size=96)
            if pair.kind == "two labels (training)":
                out[f"train:{pair.other_path}"] = ImageRef(pair.other_path, root=root, size=96)
            else:
                out[f"test:{pair.other_path}"] = ImageRef(pair.other_path, size=96)
        return out

    def summary(self, result: InfluenceResult) -> Contribution:
        if result.status != "ok":
            return Contribution()
        warnings = []
        if result.exact:
            warnings.append(
                Warning(
                    f"Leakage: {len(result.exact)} test image(s) are byte-identical to training images "
                    f"(e.g. {result.exact[0].other_path} = training {result.exact[0].train_path}).",
                    RANK_DATA,
                )
            )
        if result.near:
            warnings.append(
                Warning(
                    f"{len(result.near)} test/training pair(s) are near-duplicates (feature cosine >= "
                    f"{result.near_threshold}); see Influence.",
                    RANK_FINDINGS,
                )
            )
        if result.two_labels:
            warnings.append(Warning(f"{len(result.two_labels)} image(s) appear under two different labels.", RANK_DATA))
        if result.n_confident_disagreements:
            warnings.append(
                Warning(
                    f"{result.n_confident_disagreements} training image(s) have a label the model confidently "
                    "disagrees with; the label-issue ranking lists the ones to re-check.",
                    RANK_FINDINGS,
                )
            )
        return Contribution(
            headline={
                "influence_method": result.method,
                "training_images": result.n_train,
                "label_issue_candidates": result.n_confident_disagreements,
                "leaked_exact": len(result.exact),
                "leaked_near": len(result.near),
            },
            warnings=tuple(warnings),
        )

    def to_json(self, result: InfluenceResult | None) -> dict[str, Any]:
        return {"results.influence": None if result is None else result.to_dict()}

    def from_json(self, doc: Mapping[str, Any]) -> InfluenceResult | None:
        raw = doc.get("results", {}).get("influence")
        return None if raw is None else InfluenceResult.from_dict(raw)


def _train_root(train_path: str) -> str:
    path = Path(train_path)
    return str(path.parent if path.suffix.lower() == ".csv" else path)


def _last_layer_problem(ctx: SectionContext, tcp: CleanPass, single: bool) -> str:
    """Why the last-layer methods cannot run on this model ("" when they can): the last layer is not a Dense
    layer on the features, or its weights do not reproduce the model's probabilities."""
    kernel, bias, reason = ctx.model.last_dense()
    if kernel is None or bias is None:
        return f"The model's last trainable layer is not a dense layer on a feature vector ({reason})"
    if kernel.shape[0] != tcp.features.shape[1]:
        return f"The last dense layer takes {kernel.shape[0]} inputs but the features have {tcp.features.shape[1]}"
    z = tcp.features.astype(np.float64) @ kernel + bias
    if single:
        s = 1 / (1 + np.exp(-z[:, 0]))
        p = np.stack([1 - s, s], axis=1)
    else:
        e = np.exp(z - z.max(axis=1, keepdims=True))
        p = e / e.sum(axis=1, keepdims=True)
    gap = float(np.max(np.abs(p - tcp.probs))) if len(p) else 0.0
    if gap > REPRODUCE_TOL:
        return f"The last dense layer's weights do not reproduce the model's probabilities (off by up to {gap:.3g})"
    return ""


def _chosen(cp: CleanPass, options: InfluenceOptions) -> tuple[np.ndarray, list[str]]:
    """The test rows shown with their lists: the misclassified (highest Fisher first, capped), then the highest
    Fisher scores among the rest, then the most confident correct image(s) of each class."""
    n = len(cp.y_true)
    onehot = np.zeros_like(cp.probs)
    onehot[np.arange(n), cp.y_true] = 1
    fisher = np.sum((cp.probs - onehot) ** 2, axis=1)
    pred = cp.probs.argmax(axis=1)
    by_fisher = np.argsort(-fisher, kind="stable")
    rows: list[int] = []
    why: list[str] = []
    wrong = [int(i) for i in by_fisher if pred[i] != cp.y_true[i]][: options.misclassified]
    rows += wrong
    why += ["misclassified"] * len(wrong)
    high = [int(i) for i in by_fisher if int(i) not in rows][: options.high_fisher]
    rows += high
    why += ["high Fisher score"] * len(high)
    conf = np.argsort(-cp.probs[np.arange(n), cp.y_true], kind="stable")
    for c in np.unique(cp.y_true):
        picks = [int(i) for i in conf if cp.y_true[i] == c and pred[i] == c and int(i) not in rows]
        rows += picks[: options.per_class]
        why += ["correct (most confident of its class)"] * len(picks[: options.per_class])
    return np.asarray(rows, dtype=np.int64), why


def _leakage(
    tindex: DatasetIndex,
    tcp: CleanPass,
    index: DatasetIndex,
    cp: CleanPass,
    names: tuple[str, ...],
    options: InfluenceOptions,
    max_candidates: int = 2000,
) -> tuple[tuple[DuplicatePair, ...], tuple[DuplicatePair, ...], tuple[DuplicatePair, ...], int]:
    """Exact duplicates (content hash) and near-duplicates (feature cosine) between training and test, and images
    that appear under two labels (within the training set, or between training and test)."""
    tsamples, samples = tindex.samples, index.samples
    train_by_hash: dict[str, list[int]] = {}
    for row, h in enumerate(tcp.hashes):
        train_by_hash.setdefault(h, []).append(row)
    exact, two = [], []
    exact_pairs = set()
    for t, h in enumerate(cp.hashes):
        for row in train_by_hash.get(h, []):
            exact_pairs.add((row, t))
            pair = DuplicatePair(
                "exact",
                tsamples[tcp.sample_idx[row]].rel,
                names[tcp.y_true[row]],
                samples[cp.sample_idx[t]].rel,
                names[cp.y_true[t]],
                None,
            )
            exact.append(pair)
            if tcp.y_true[row] != cp.y_true[t]:
                two.append(
                    DuplicatePair(
                        "two labels (training/test)",
                        pair.train_path,
                        pair.train_label,
                        pair.other_path,
                        pair.other_label,
                        None,
                    )
                )
    for rows in train_by_hash.values():
        for a in rows:
            for b in rows:
                if a < b and tcp.y_true[a] != tcp.y_true[b]:
                    two.append(
                        DuplicatePair(
                            "two labels (training)",
                            tsamples[tcp.sample_idx[a]].rel,
                            names[tcp.y_true[a]],
                            tsamples[tcp.sample_idx[b]].rel,
                            names[tcp.y_true[b]],
                            None,
                        )
                    )
    if cp.features_or_none is None:  # no features: no near-duplicate candidates (said in the report)
        return tuple(exact), (), tuple(two), 0
    pairs = near_duplicates(tcp.features, cp.features, threshold=options.near_threshold, limit=max_candidates)
    candidates = [(int(i), int(j), float(c)) for i, j, c in zip(pairs.train, pairs.test, pairs.cosine)]
    candidates = [(i, j, c) for i, j, c in candidates if (i, j) not in exact_pairs]
    signatures: dict[tuple[str, int], np.ndarray | None] = {}

    def signature(side: str, row: int) -> np.ndarray | None:
        if (side, row) not in signatures:
            sample = tsamples[tcp.sample_idx[row]] if side == "train" else samples[cp.sample_idx[row]]
            loaded = load_sample(row, sample, "cv2")
            signatures[side, row] = None if loaded.image is None else pixel_signature(loaded.image)
        return signatures[side, row]

    near = []
    for i, j, c in candidates:
        a, b = signature("train", i), signature("test", j)
        corr = float(a @ b) if a is not None and b is not None else float("nan")
        if corr >= options.pixel_threshold:
            near.append(
                DuplicatePair(
                    "near",
                    tsamples[tcp.sample_idx[i]].rel,
                    names[tcp.y_true[i]],
                    samples[cp.sample_idx[j]].rel,
                    names[cp.y_true[j]],
                    c,
                    corr,
                )
            )
    return tuple(exact), tuple(near[:200]), tuple(two), len(candidates)
