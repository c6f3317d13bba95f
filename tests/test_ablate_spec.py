"""Ablation specs: strict YAML validation, grid enumeration, trial → config overrides."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from relkd_bench.ablate import MODULE_SETS, cell_key, load_spec, make_plan, spec_from_dict
from relkd_bench.ablate.spec import canonical_modules

ABLATIONS = Path(__file__).resolve().parents[1] / "ablations"
GRID = {"name": "t", "objective": "smoke", "grid": {"seed": [0, 1], "modules": ["LM", "none"]}}


def _write(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("name", sorted(p.stem for p in ABLATIONS.glob("*.yaml")))
def test_shipped_specs_load(name):
    spec = load_spec(ABLATIONS / f"{name}.yaml")
    assert spec.name == name
    if spec.sampler == "grid":
        assert spec.cells()[0][spec.module_axis] in ("none", "no-KD")  # the baseline comes first
    assert {"quick": 8, "modules": 24, "paper": 144}.get(name, spec.total) == spec.total


def test_unknown_top_level_key_names_key_and_file(tmp_path):
    path = _write(tmp_path, {**GRID, "sampelr": "grid"})
    with pytest.raises(ValueError, match=r"spec\.yaml.*unknown key sampelr"):
        load_spec(path)


def test_unknown_nested_key_names_key_and_file(tmp_path):
    data = {"name": "t", "objective": "smoke", "sampler": "tpe", "n_trials": 3,
            "search_space": {"distill.lambda_km": {"type": "float", "low": 0.1, "high": 1,
                                                   "of_switch": True}}}
    with pytest.raises(ValueError, match=r"spec\.yaml.*search_space\.distill\.lambda_km\.of_switch"):
        load_spec(_write(tmp_path, data))
    with pytest.raises(ValueError, match=r"spec\.yaml.*heartbeat\.grase"):
        load_spec(_write(tmp_path, {**GRID, "heartbeat": {"grase": 3}}))


def test_unknown_config_key_in_overrides_or_grid(tmp_path):
    bad = {**GRID, "objective": "engine", "overrides": {"train.epoch": 2}}
    with pytest.raises(ValueError, match=r"spec\.yaml.*train\.epoch"):
        load_spec(_write(tmp_path, bad))
    bad = {**GRID, "objective": "engine", "grid": {"train.sed": [0], "modules": ["none"]}}
    with pytest.raises(ValueError, match=r"spec\.yaml.*train\.sed"):
        load_spec(_write(tmp_path, bad))


def test_grid_needs_the_baseline_and_valid_modules(tmp_path):
    with pytest.raises(ValueError, match="must include 'none'"):
        spec_from_dict({**GRID, "grid": {"modules": ["LM"]}})
    with pytest.raises(ValueError, match="unknown module 'XX'"):
        spec_from_dict({**GRID, "grid": {"modules": ["none", "LM+XX"]}})
    assert canonical_modules("aa+lm") == "LM+AA" and canonical_modules("") == "none"


def test_grid_cells_order_and_keys():
    spec = spec_from_dict({**GRID, "grid": {"modules": list(reversed(MODULE_SETS)), "seed": [0, 1, 2],
                                            "heldout": ["BIDMC"]}})
    cells = spec.cells()
    assert len(cells) == spec.total == 24
    assert [c["modules"] for c in cells[:8]] == ["none", *reversed(MODULE_SETS[1:])]  # none first, fastest
    assert [c["seed"] for c in cells[::8]] == [0, 1, 2]
    assert len({cell_key(c) for c in cells}) == 24
    assert cell_key(cells[0]) == "seed=0|heldout=BIDMC|modules=none"


def test_plan_maps_params_to_config_overrides():
    spec = spec_from_dict({**GRID, "grid": {"modules": ["none", "LM+AA"], "heldout": ["UCL"]},
                           "overrides": {"train.epochs": 2}, "module_weights": {"AA": 0.5}})
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"modules": "LM+AA", "heldout": "UCL"})
    plan = make_plan(study.ask(), spec)
    assert plan.overrides == {"train.epochs": 2, "data.heldout": "UCL", "distill.lambda_logits": 1.0,
                              "distill.lambda_km": 0.0, "distill.lambda_aa": 0.5}
    assert plan.method == "LM+AA" and not plan.baseline and plan.cell == "heldout=UCL|modules=LM+AA"


def test_tpe_off_switch_and_requires():
    spec = load_spec(ABLATIONS / "loss_weights.yaml")
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"distill.lambda_logits:on": False, "distill.lambda_km:on": True,
                         "distill.lambda_km": 0.3, "distill.lambda_aa:on": False})
    plan = make_plan(study.ask(), spec)
    assert plan.overrides["distill.lambda_logits"] == 0.0 and plan.overrides["distill.lambda_km"] == 0.3
    assert "distill.temperature" not in plan.params and "distill.aa_variant" not in plan.params
    assert plan.method == "KM"


def test_method_label_comes_from_the_effective_config():
    """λs the search space leaves alone come from the base preset (quick: LM 1, KM 0.05, AA 10)."""
    spec = spec_from_dict({"name": "w", "objective": "smoke", "sampler": "tpe", "n_trials": 3,
                           "search_space": {"distill.lambda_aa": {"type": "float", "low": 0.1, "high": 1.0,
                                                                  "off_switch": True}}})
    study = optuna.create_study(direction="maximize")
    study.enqueue_trial({"distill.lambda_aa:on": False})
    study.enqueue_trial({"distill.lambda_aa:on": True, "distill.lambda_aa": 0.5})
    study.enqueue_trial({"distill.lambda_aa:on": False}, user_attrs={"baseline": True})
    off, on, baseline = (make_plan(study.ask(), spec) for _ in range(3))
    assert "distill.lambda_logits" not in on.overrides  # LM, KM: only in the preset
    assert (off.method, on.method, baseline.method) == ("LM+KM", "LM+KM+AA", "none")
    assert on.lambdas == {"LM": 1.0, "KM": 0.05, "AA": 0.5}
    none = spec_from_dict({**GRID, "overrides": {"distill.lambda_km": 0.0}, "grid": {"heldout": ["HK"],
                                                                                     "modules": ["none"]}})
    study.enqueue_trial({"heldout": "HK", "modules": "none"})
    assert make_plan(study.ask(), none).method == "none"
