"""The augmentation keys: data.augment (true/false or a level), teacher.augment / student.augment
overrides, clear errors, and the teacher identity (teacher_hash) that follows the teacher's recipe."""

from __future__ import annotations

import pytest

from relkd_bench.config import augment_level, config_hash, load_config, teacher_hash


def test_old_boolean_keeps_its_meaning():
    on = load_config("quick", {"data.augment": True, "teacher.augment": None})
    off = load_config("quick", ["data.augment=false", "teacher.augment=null"])
    assert [augment_level(on, r) for r in ("teacher", "student")] == ["standard", "standard"]
    assert [augment_level(off, r) for r in ("teacher", "student")] == ["none", "none"]


def test_levels_and_role_overrides():
    cfg = load_config("quick", ["data.augment=bigaug", "student.augment=standard"])
    assert augment_level(cfg, "teacher") == "bigaug" and augment_level(cfg, "student") == "standard"
    cfg = load_config("quick", ["teacher.augment=bigaug", "student.augment=null"])
    assert augment_level(cfg, "teacher") == "bigaug" and augment_level(cfg, "student") == "standard"
    assert cfg.teacher.augment == "bigaug" and cfg.student.augment is None


def test_yaml_file_with_levels(tmp_path):
    f = tmp_path / "exp.yaml"
    f.write_text("base: quick\ndata:\n  augment: none\nteacher:\n  augment: bigaug\n")
    cfg = load_config(f)
    assert augment_level(cfg, "teacher") == "bigaug" and augment_level(cfg, "student") == "none"


@pytest.mark.parametrize(("override", "message"), [
    ({"data.augment": "strong"},
     r"data\.augment must be true/false or one of \('none', 'standard', 'bigaug'\), got 'strong'"),
    ({"data.augment": 3}, r"data\.augment must be true/false or a string, got 3"),
    ({"teacher.augment": "heavy"}, r"teacher\.augment must be null \(= data\.augment\) or one of"),
    ({"student.augment": True}, r"student\.augment must be a string, got True"),
    ({"teacher.augmentation": "bigaug"}, r"unknown config key 'teacher\.augmentation'"),
])
def test_bad_values_are_named(override, message):
    with pytest.raises(ValueError, match=message):
        load_config("quick", override)


def test_teacher_identity_follows_the_teacher_recipe():
    def quick(overrides: dict) -> object:  # the quick preset with the teacher on data.augment
        return load_config("quick", {"teacher.augment": None, **overrides})

    base = quick({})
    same = [quick(o) for o in ({"teacher.augment": "standard"}, {"data.augment": "standard"},
                               {"data.augment": "bigaug", "teacher.augment": "standard"},
                               {"student.augment": "bigaug"})]
    assert all(teacher_hash(c) == teacher_hash(base) for c in same)
    big = quick({"teacher.augment": "bigaug"})
    assert teacher_hash(big) != teacher_hash(base)
    assert teacher_hash(big) == teacher_hash(quick({"data.augment": "bigaug"}))
    assert teacher_hash(big) == teacher_hash(load_config("quick"))  # the preset's teacher is BigAug's
    assert teacher_hash(quick({"teacher.augment": "none"})) != teacher_hash(base)
    # the student's recipe is part of the student's run identity
    assert config_hash(same[3]) != config_hash(base)
