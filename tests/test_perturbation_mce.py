"""mCE across models: the arithmetic by hand, and two models audited in one run (the second report holds its
corruption errors relative to the first; ``--reference`` switches the reference)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from auditor.analyses.perturbation import Cell, PerturbationResult, VersusReference, mce
from tests.conftest import SAMPLE_MODEL, SAMPLE_TEST


def _grid(errors: dict[str, list[float]], clean_error: float, severities=(1, 2)) -> PerturbationResult:
    """A grid whose cells only carry the accuracies the arithmetic reads."""
    cells = tuple(
        Cell(p, s, 0.0, 10, 1 - clean_error, 1 - e, (0.0, 1.0), 0.0, (0.0, 0.0), 0, 0, 0.0, 0.5, 0.5, (), (), "all")
        for p, errs in errors.items()
        for s, e in zip(severities, errs)
    )
    return PerturbationResult(
        class_names=("a", "b"),
        input_size=(8, 8),
        perturbations=tuple(errors),
        severities=tuple(severities),
        n_subsample=10,
        n_available=10,
        clean_accuracy=1 - clean_error,
        clean_error=clean_error,
        clean_per_class=(None, None),
        cells=cells,
        summaries=(),
        robust_accuracy=0.0,
        worst=(next(iter(errors)), severities[0]),
        worst_perturbation=next(iter(errors)),
        forward_passes=0,
        full_grid_passes=0,
        precision=0.02,
        threshold=0.05,
        seed=0,
        reading=(),
        notes=(),
        example_path="x.png",
        example_label="a",
    )


def test_mce_equals_a_hand_computation():
    model = _grid({"blur": [0.2, 0.4], "noise": [0.3, 0.5], "jpeg": [0.1, 0.1]}, clean_error=0.1)
    ref = _grid({"blur": [0.1, 0.3], "noise": [0.3, 0.5], "jpeg": [0.0, 0.0]}, clean_error=0.05)
    v = mce(model, ref, reference_name="ref.keras")
    # CE_p = sum_s E_model / sum_s E_ref; relative: sum_s (E - E_clean) ratios; jpeg: the reference makes no
    # error, so both of its ratios are undefined and left out of the means
    ce_blur, ce_noise = 0.6 / 0.4, 0.8 / 0.8
    rel_blur = ((0.2 - 0.1) + (0.4 - 0.1)) / ((0.1 - 0.05) + (0.3 - 0.05))  # 0.4 / 0.3
    rel_noise = ((0.3 - 0.1) + (0.5 - 0.1)) / ((0.3 - 0.05) + (0.5 - 0.05))  # 0.6 / 0.7
    assert v.perturbations == ("blur", "noise", "jpeg") and v.severities == (1, 2)
    assert v.ce[0] == pytest.approx(ce_blur) and v.ce[1] == pytest.approx(ce_noise) and v.ce[2] is None
    assert v.relative_ce[0] == pytest.approx(4 / 3) and v.relative_ce[0] == pytest.approx(rel_blur)
    assert v.relative_ce[1] == pytest.approx(6 / 7) == pytest.approx(rel_noise) and v.relative_ce[2] is None
    assert v.mce == pytest.approx((1.5 + 1.0) / 2) and v.relative_mce == pytest.approx((4 / 3 + 6 / 7) / 2)
    assert v.reference == "ref.keras" and not v.is_reference
    same = mce(ref, ref, reference_name="ref.keras", is_reference=True)
    assert same.ce[:2] == (1.0, 1.0) and same.mce == 1.0 and same.is_reference
    # through JSON and back, inside the grid's result (None stays None; old reports have no field)
    g = PerturbationResult.from_dict(json.loads(json.dumps({**model.to_dict(), "versus_reference": v.to_dict()})))
    assert g.versus_reference == v
    old = model.to_dict()
    old.pop("versus_reference")
    assert PerturbationResult.from_dict(old).versus_reference is None
    assert VersusReference.from_dict(v.to_dict()) == v


def _weaker_copy(tmp: Path) -> Path:
    """The sample model with its first convolution's weights disturbed (seeded): a different, less robust
    model with the same classes (its sidecar copied)."""
    import keras

    model = keras.models.load_model(SAMPLE_MODEL)
    conv = next(layer for layer in model.layers if layer.get_weights() and len(layer.get_weights()[0].shape) == 4)
    w = conv.get_weights()
    rng = np.random.default_rng(3)
    w[0] = w[0] * (1 + 0.3 * rng.standard_normal(w[0].shape)).astype(np.float32)
    conv.set_weights(w)
    path = tmp / "weaker.keras"
    model.save(path)
    shutil.copy(SAMPLE_MODEL.with_suffix(".json"), tmp / "weaker.json")
    return path


def _ce_by_hand(model: dict, ref: dict) -> dict[str, float]:
    def err(g, p, s):
        return 1 - next(c["accuracy"] for c in g["cells"] if c["perturbation"] == p and c["severity"] == s)

    return {
        p: sum(err(model, p, s) for s in model["severities"]) / sum(err(ref, p, s) for s in ref["severities"])
        for p in model["perturbations"]
    }


def test_two_models_in_one_run_get_mce_against_the_reference(tmp_path):
    from auditor.config import AuditConfig
    from auditor.history import write_report
    from auditor.pipeline import run_audit

    weaker = _weaker_copy(tmp_path)
    grid = {"perturbations": ["defocus_blur", "gaussian_noise"], "severities": [2, 5], "samples": 60}

    def audit(reference=None, formats=("json",)):
        cfg = AuditConfig(
            model_paths=(SAMPLE_MODEL, weaker),
            data_path=SAMPLE_TEST,
            out_dir=tmp_path / "out",
            formats=formats,
            n_bootstrap=0,
            enabled=("classification", "perturbation_grid"),
            reference=reference,
            sections={"perturbation_grid": grid},
        )
        reports = run_audit(cfg, write=write_report)
        return [json.loads((r.artifacts.out_dir / "audit.json").read_text()) for r in reports]

    first, second = audit(formats=("json", "html"))
    g1, g2 = first["results"]["perturbation_grid"], second["results"]["perturbation_grid"]
    v1, v2 = g1["versus_reference"], g2["versus_reference"]
    assert v1["is_reference"] and v1["reference"] == "wbc5_small_cnn.keras" and v1["mce"] == pytest.approx(1.0)
    assert not v2["is_reference"] and v2["reference"] == "wbc5_small_cnn.keras"
    hand = _ce_by_hand(g2, g1)
    assert v2["ce"] == pytest.approx([hand["defocus_blur"], hand["gaussian_noise"]])
    assert v2["mce"] == pytest.approx(np.mean(list(hand.values())))
    assert v2["mce"] != pytest.approx(1.0)  # two different models
    assert second["summary"]["headline"]["perturbation_mce"] == pytest.approx(v2["mce"])
    assert second["summary"]["headline"]["perturbation_mce_reference"] == "wbc5_small_cnn.keras"
    html = (Path(second["config"]["out"]) / "weaker").glob("*/report.html")
    text = next(html).read_text()
    assert "mCE against the reference model" in text and "wbc5_small_cnn.keras" in text

    # --reference: the second model is the reference; the first report's CE are the inverse ratios
    first_b, second_b = audit(reference="weaker.keras")
    vb1 = first_b["results"]["perturbation_grid"]["versus_reference"]
    vb2 = second_b["results"]["perturbation_grid"]["versus_reference"]
    assert vb2["is_reference"] and vb1["reference"] == "weaker.keras" and not vb1["is_reference"]
    assert vb1["ce"] == pytest.approx([1 / c for c in v2["ce"]])  # the same grids: seeded, deterministic


def test_single_model_has_no_mce_and_bad_reference_is_an_input_error(tmp_path, colour_data, colour_model_path):
    from click.testing import CliRunner

    from auditor.cli import main
    from auditor.config import AuditConfig
    from auditor.errors import InputError

    with pytest.raises(InputError) as e:
        AuditConfig(model_paths=(SAMPLE_MODEL, colour_model_path), data_path=colour_data, reference="other.keras")
    assert "--reference" in str(e.value) and "'other.keras' is not one of the audited models" in str(e.value)
    ok = AuditConfig(model_paths=(SAMPLE_MODEL, colour_model_path), data_path=colour_data, reference="colour")
    assert ok.reference_index() == 1
    r = CliRunner().invoke(
        main, [str(SAMPLE_MODEL), str(colour_model_path), str(colour_data), "--reference", "x.keras"]
    )
    assert r.exit_code == 2 and r.output.count("error:") == 1 and "--reference" in r.output
    r = CliRunner().invoke(main, ["a.keras", "b.keras", "d", "--reference", "b.keras", "--print-config"])
    assert r.exit_code == 0 and 'reference = "b.keras"' in r.stdout
    # one model: no comparison
    from auditor.pipeline import run_audit

    cfg = AuditConfig(
        model_paths=(colour_model_path,),
        data_path=colour_data,
        n_bootstrap=0,
        enabled=("perturbation_grid",),
        sections={"perturbation_grid": {"perturbations": ["jpeg"], "severities": [1], "samples": 6}},
    )
    (report,) = run_audit(cfg)
    assert report["perturbation_grid"].grid.versus_reference is None
    assert "perturbation_mce" not in report.summary["headline"]
