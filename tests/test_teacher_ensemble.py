"""The ensemble teacher (teacher.members > 1): independent members, member 0 = the single teacher, mean
logits, selection numbers from source-site validation only, reuse, and distillation from it."""

from __future__ import annotations

import json
import math

import pytest
import torch
from helpers import TINY_RUN

from relkd_bench.config import load_config, teacher_hash
from relkd_bench.engine import load_model, train_student, train_teacher
from relkd_bench.engine.teacher_ensemble import member_configs
from relkd_bench.models import TeacherEnsemble

TINY = {**TINY_RUN, "train.epochs": 1, "train.max_steps_per_epoch": 1}



def test_config_and_identity():
    single, ens = load_config("quick"), load_config("quick", {"teacher.members": 3})
    assert single.teacher.members == 1 and teacher_hash(ens) != teacher_hash(single)
    members = member_configs(ens)
    assert len(members) == 3 and all(m.teacher.members == 1 for m in members)
    assert teacher_hash(members[0]) == teacher_hash(single)  # member 0 is the single teacher
    assert len({teacher_hash(m) for m in members}) == 3
    with pytest.raises(ValueError, match="student.members"):
        load_config("quick", {"student.members": 2})
    with pytest.raises(ValueError, match="teacher.members must be >= 1"):
        load_config("quick", {"teacher.members": 0})
    with pytest.raises(ValueError, match="not teacher_ensemble"):
        load_config("quick", {"teacher.members": 2, "teacher.name": "teacher_ensemble"})


def test_ensemble_teacher_end_to_end(tmp_path):
    cfg = load_config("quick", {**TINY, "teacher.members": 2, "run.workdir": str(tmp_path / "runs" / "w")})
    path = train_teacher(cfg, progress=False)
    single = train_teacher(member_configs(cfg)[0], progress=False)
    assert single.parent.name == f"teacher-unet_wide-{teacher_hash(member_configs(cfg)[0])}"
    assert single.parent != path.parent and path.parent.name.startswith("teacher-unet_wide-x2-")

    sel = json.loads((path.parent / "selection.json").read_text())
    assert [m["checkpoint"] for m in sel["members"]][0] == str(single)
    assert len(sel["members"]) == 2 and math.isfinite(sel["ensemble_val_dice"])

    model, meta = load_model(path)
    assert isinstance(model, TeacherEnsemble) and len(model.members) == 2
    assert meta["config"]["data"]["heldout"] == "UCL" and meta["val_dice"] == sel["ensemble_val_dice"]
    x = torch.randn(2, 1, 32, 32)
    members = [load_model(m["checkpoint"])[0] for m in sel["members"]]
    with torch.no_grad():
        torch.testing.assert_close(model(x), (members[0](x) + members[1](x)) / 2)

    mtime = path.stat().st_mtime_ns
    assert train_teacher(cfg, progress=False) == path and path.stat().st_mtime_ns == mtime  # reused

    result = train_student(cfg, path, progress=False)
    assert result.epochs_run == 1 and math.isfinite(result.best_val_dice)
