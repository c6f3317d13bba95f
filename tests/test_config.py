"""Config loading: presets, overrides, unknown keys, hashing."""

from __future__ import annotations

import dataclasses
import json

import pytest

from relkd_bench.config import ExperimentConfig, config_hash, list_presets, load_config, teacher_hash


def test_presets_load_and_are_frozen():
    assert {"quick", "paper"} <= set(list_presets())
    quick, paper = load_config("quick"), load_config("paper")
    assert isinstance(quick, ExperimentConfig)
    assert quick.data.size == 96 and paper.data.size == 384
    assert quick.data.root == "synthetic"
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick.train.seed = 3
    json.dumps(quick.to_dict())  # JSON-safe


def test_overrides_strings_and_mapping():
    a = load_config("quick", ["train.seed=3", "distill.aa_variant=cosine",
                              "distill.km_pairs=[[stage1, decoder]]"])
    assert a.train.seed == 3 and a.distill.aa_variant == "cosine"
    assert a.distill.km_pairs == (("stage1", "decoder"),)
    b = load_config("quick", {"distill.lambda_logits": 0.0, "teacher.kwargs.num_res_units": 2})
    assert b.distill.lambda_logits == 0.0 and b.teacher.kwargs["num_res_units"] == 2


def test_unknown_keys_are_named(tmp_path):
    with pytest.raises(ValueError, match="train.sed"):
        load_config("quick", ["train.sed=1"])
    with pytest.raises(ValueError, match="nosuch"):
        load_config("quick", {"nosuch.key": 1})
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: quick\ndistill:\n  lamda_aa: 1.0\n")
    with pytest.raises(ValueError, match=r"bad\.yaml.*distill\.lamda_aa"):
        load_config(bad)


def test_yaml_base_and_invalid_values(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("base: quick\ntrain:\n  epochs: 2\n")
    cfg = load_config(f)
    assert cfg.train.epochs == 2 and cfg.teacher.name == load_config("quick").teacher.name
    with pytest.raises(ValueError, match="aa_variant"):
        load_config("quick", {"distill.aa_variant": "nope"})
    with pytest.raises(ValueError, match="integer"):
        load_config("quick", {"train.epochs": "many"})
    with pytest.raises(ValueError, match="unknown preset"):
        load_config("no_such_preset")


def test_hashes_stable_and_teacher_hash_ignores_student_side():
    a, b = load_config("quick"), load_config("quick")
    assert config_hash(a) == config_hash(b) and len(config_hash(a)) == 12
    c = load_config("quick", {"distill.lambda_aa": 0.0, "student.name": "erfnet", "train.device": "cpu"})
    assert config_hash(c) != config_hash(a)
    assert teacher_hash(c) == teacher_hash(a)
    assert teacher_hash(load_config("quick", {"data.heldout": "HK"})) != teacher_hash(a)
