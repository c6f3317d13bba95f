"""Engine: tiny end-to-end run, LOSO leakage guards (data split, teacher), exact resume, corrupt
checkpoints, metrics, CLIs."""

from __future__ import annotations

import json
import logging
import math
import shutil
from pathlib import Path

import pytest
import torch
from helpers import TINY_RUN

from relkd_bench.config import load_config
from relkd_bench.engine import (
    CheckpointError,
    load_checkpoint,
    make_train_loader,
    prepare_data,
    save_atomic,
    train_student,
    train_teacher,
    volume_metrics,
)
from relkd_bench.engine.teacher_check import TeacherMismatchError, check_teacher, teacher_mismatches

TINY = TINY_RUN
NO_KD = {"distill.lambda_logits": 0.0, "distill.lambda_km": 0.0, "distill.lambda_aa": 0.0}



@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("engine")
    cfg = load_config("quick", {**TINY, "run.workdir": str(root / "runs" / "w")})
    return cfg, train_teacher(cfg, progress=False)


def _state(path):
    ckpt = load_checkpoint(path)
    return ckpt.get("state_dict") or ckpt["model"]


def test_tiny_end_to_end(tiny):
    cfg, teacher = tiny
    assert teacher.is_file() and (teacher.parent / "log.csv").is_file()
    mtime = teacher.stat().st_mtime_ns
    assert train_teacher(cfg, progress=False) == teacher and teacher.stat().st_mtime_ns == mtime  # reused
    calls = []
    res = train_student(cfg, teacher, epoch_callback=lambda e, d: calls.append((e, d)), progress=False)
    assert [e for e, _ in calls] == [0, 1] and res.epochs_run == 2
    assert res.heldout_site == "UCL" and len(res.heldout_per_case) == 3
    assert {r["site"] for r in res.heldout_per_case} == {"UCL"}
    assert set(res.heldout) >= {"dice", "hd95", "assd"} and 0.0 <= res.heldout["dice"] <= 1.0
    assert res.backend.endswith("-cpu") and res.device == "cpu" and res.seconds_per_epoch > 0
    assert res.checkpoint.is_file() and 0 <= res.best_epoch < 2
    json.dumps(res.to_dict())
    rows = (res.checkpoint.parent / "log.csv").read_text().splitlines()
    assert len(rows) == 3 and "train_km" in rows[0] and "train_aa" in rows[0]
    # a finished run is returned from its result.json, without re-scoring
    again = train_student(cfg, teacher, progress=False)
    assert again.heldout_per_case == res.heldout_per_case or math.isnan(res.heldout["dice"])
    # teacher checkpoint loads with weights_only=True and records the preprocessing evaluation replays
    assert torch.load(teacher, weights_only=True)["data"] == {"size": 32, "context_slices": 1,
                                                              "normalize": "zscore", "inplane_spacing": None,
                                                              "label_map": None}


def test_heldout_never_reaches_training_or_validation(tiny):
    cfg, _ = tiny
    run = prepare_data(cfg)
    held = {c.uid for c in run.split.heldout_cases()}
    assert held and all(c.site == "UCL" for c in run.split.heldout_cases())
    seen = set()
    for epoch in range(2):
        for batch in make_train_loader(cfg, run, epoch, seed=epoch):
            seen.update(batch["uid"])
    val = run.split.val_dataset(run.cache)
    seen.update(val[i]["uid"] for i in range(len(val)))
    assert seen and not seen & held
    assert all(not u.startswith("UCL/") for u in seen)


class _Killed(Exception):
    pass


def test_resume_matches_uninterrupted_run(tiny, tmp_path):
    cfg, teacher = tiny
    cfg = load_config(cfg.to_dict(), {"distill.lambda_logits": 0.0})  # KMM adapters are trained state too
    full = train_student(cfg, teacher, workdir=tmp_path / "a", progress=False)

    def kill(epoch, dice):
        if epoch == 0:
            raise _Killed

    with pytest.raises(_Killed):
        train_student(cfg, teacher, workdir=tmp_path / "b", epoch_callback=kill, progress=False)
    (last,) = (tmp_path / "b").glob("student-*/last.pt")
    assert load_checkpoint(last)["epoch"] == 1
    resumed = train_student(cfg, teacher, workdir=tmp_path / "b", progress=False)
    a, b = load_checkpoint(full.checkpoint.parent / "last.pt"), load_checkpoint(last)
    for key in ("model", "loss"):
        assert a[key].keys() == b[key].keys()
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    assert resumed.best_epoch == full.best_epoch and resumed.epochs_run == full.epochs_run == 2


def test_corrupt_checkpoint_is_a_clear_error(tiny, tmp_path):
    cfg, teacher = tiny
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        load_checkpoint(bad)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(teacher.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match=str(trunc.name)):
        load_checkpoint(trunc)
    other = save_atomic({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match="not a relkd-bench checkpoint"):
        load_checkpoint(other)
    # a corrupt last.pt stops a resume with the same error instead of silently restarting
    run_dir = teacher.parent
    copy = tmp_path / "w" / run_dir.name
    shutil.copytree(run_dir, copy)
    (copy / "last.pt").write_bytes(b"\x00" * 100)
    with pytest.raises(CheckpointError, match="last.pt"):
        train_teacher(cfg, workdir=tmp_path / "w", progress=False)
    with pytest.raises(CheckpointError):
        train_student(cfg, bad, workdir=tmp_path / "s", progress=False)


def test_no_kd_baseline_needs_no_teacher(tiny, tmp_path, caplog):
    cfg, _ = tiny
    cfg = load_config(cfg.to_dict(), {**NO_KD, "train.epochs": 1, "train.max_steps_per_epoch": 1})
    with caplog.at_level(logging.INFO, logger="relkd_bench.engine.trainer"):
        res = train_student(cfg, None, workdir=tmp_path, progress=False)
    assert res.epochs_run == 1
    assert "[student] epoch 1/1 loss " in caplog.text  # the live progress line without progress bars
    with pytest.raises(ValueError, match="teacher"):
        train_student(load_config(cfg.to_dict(), {"distill.lambda_aa": 1.0}), None, workdir=tmp_path)


def test_volume_metrics_cases():
    gt = torch.zeros(8, 16, 16, dtype=torch.long)
    gt[2:6, 4:12, 4:12] = 1
    m = volume_metrics(gt, gt, (2.0, 1.0, 1.0))
    assert m == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    pred = gt.clone()
    pred[0, 0, 0] = 1  # a far-away speck: removed by the largest-connected-component step
    assert volume_metrics(pred, gt, (2.0, 1.0, 1.0))["dice"] == 1.0
    assert volume_metrics(pred, gt, (2.0, 1.0, 1.0), keep_lcc=False)["dice"] < 1.0
    shifted = torch.roll(gt, 2, dims=1)
    s = volume_metrics(shifted, gt, (2.0, 1.5, 1.0))
    assert 0 < s["dice"] < 1 and s["hd95"] == pytest.approx(3.0)  # 2 rows x 1.5 mm
    empty = torch.zeros_like(gt)
    assert volume_metrics(empty, empty, (1, 1, 1)) == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    one = volume_metrics(empty, gt, (1, 1, 1))
    assert one["dice"] == 0.0 and math.isnan(one["hd95"]) and math.isnan(one["assd"])


def test_clis(tiny, tmp_path, capsys):
    from relkd_bench import evaluate, train

    for mod in (train, evaluate):
        with pytest.raises(SystemExit) as exc:
            mod.main(["--help"])
        assert exc.value.code == 0
    assert "teacher" in capsys.readouterr().out
    cfg, teacher = tiny
    assert train.main(["student", "--config", "quick", "train.sed=1"]) == 2
    # evaluate on a one-site folder (like ../shared/data/promise12_case00)
    run = prepare_data(cfg)
    one = tmp_path / "onecase"
    one.mkdir()
    case = run.split.heldout_cases()[0]
    shutil.copy(case.image_path, one / "Case00.nii.gz")
    shutil.copy(case.mask_path, one / "Case00_segmentation.nii.gz")
    out = tmp_path / "eval.json"
    rc = evaluate.main(["--checkpoint", str(teacher), "--data", str(one), "--site", "REAL", "--device", "cpu",
                        "--cache-dir", str(tmp_path / "cache"), "--json", str(out)])
    assert rc == 0
    res = json.loads(out.read_text())
    assert [c["uid"] for c in res["cases"]] == ["REAL/Case00"] and "all" in res["sites"]
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"xx")
    assert evaluate.main(["--checkpoint", str(bad), "--data", str(one)]) == 1
    assert "corrupt" in capsys.readouterr().err


def test_cli_refuses_a_teacher_that_saw_the_heldout_site(tiny, capsys):
    """A teacher trained with data.heldout=HK trained on BIDMC: a BIDMC-held-out student must refuse it."""
    from relkd_bench import train

    cfg, _ = tiny
    args = [f"{k}={v}" for k, v in TINY.items() if k != "data.heldout"]
    args.append(f"run.workdir={cfg.run.workdir}-cli")  # same runs/ folder: the tiny data is reused
    assert train.main(["teacher", "--config", "quick", "--no-progress", *args, "data.heldout=HK"]) == 0
    best = json.loads(capsys.readouterr().out)["teacher_checkpoint"]
    rc = train.main(["student", "--config", "quick", "--no-progress", "--teacher", best, *args,
                     "data.heldout=BIDMC"])
    err = capsys.readouterr().err
    assert rc == 2 and err.startswith("error:"), err
    assert "data.heldout=HK" in err and "data.heldout=BIDMC" in err
    assert not list(Path(f"{cfg.run.workdir}-cli").glob("student-*"))  # refused before any training


def test_teacher_data_settings_must_match(tiny):
    cfg, teacher = tiny
    check_teacher(teacher, cfg)  # its own fold: accepted
    check_teacher(teacher, load_config(cfg.to_dict(), {"data.heldout": "ucl", "data.augment": False}))
    with pytest.raises(TeacherMismatchError, match=r"data.size: teacher 32, student 64"):
        check_teacher(teacher, load_config(cfg.to_dict(), {"data.size": 64}))
    other = {"data.normalize": "percentile", "data.context_slices": 3, "data.synthetic.seed": 1,
             "data.root": "/elsewhere", "data.split_seed": 1}
    for key, value in other.items():
        found = teacher_mismatches(cfg.to_dict()["data"], load_config(cfg.to_dict(), {key: value}))
        assert [p.split(":")[0] for p in found] == [key]
    data = cfg.to_dict()["data"]
    assert teacher_mismatches({k: v for k, v in data.items() if k != "val_fraction"}, cfg) == []  # default
    assert "does not know" in teacher_mismatches({**data, "crop": 8}, cfg)[0]
