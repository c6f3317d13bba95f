"""Tasks with more than 2 classes: the label map, multi-class resizing and metrics, a 3-class (zonal)
end-to-end run with distillation, per-class report tables."""

from __future__ import annotations

import nibabel as nib
import numpy as np
import pytest
import torch
from helpers import TINY_RUN

from relkd_bench.config import config_hash, load_config, teacher_hash
from relkd_bench.data import DataError, ensure_synthetic_collection, load_case, scan_collection
from relkd_bench.data.labels import apply_label_map
from relkd_bench.data.preprocess import _resize
from relkd_bench.engine import load_checkpoint, train_student, train_teacher, volume_metrics
from relkd_bench.engine.api import evaluate_checkpoint
from relkd_bench.evaluate import main as evaluate_main
from relkd_bench.report.collect import read_trials_csv, write_trials_csv
from relkd_bench.report.tables import class_tables

TINY = TINY_RUN



def _zonal_collection(root):
    """The tiny synthetic collection with each gland split into two "zones" (1 left, 2 right of its
    centre), as MSD Task05 imported with --keep-zones stores them."""
    ensure_synthetic_collection(root, 3, 32, 6, 0)
    for ref in scan_collection(root)[0]:
        img = nib.load(str(ref.mask_path))
        mask = np.asarray(img.dataobj) > 0
        xs = np.nonzero(mask)[0]
        zones = mask.astype(np.uint8)
        if xs.size:
            zones[int(np.median(xs)):][mask[int(np.median(xs)):]] = 2
        nib.save(nib.Nifti1Image(zones, img.affine, img.header), str(ref.mask_path))
    return root


def test_label_map_default_is_binary_and_a_map_keeps_classes():
    mask = np.array([0, 1, 2, 2, 0])
    assert apply_label_map(mask, None).tolist() == [0, 1, 1, 1, 0]
    assert apply_label_map(mask, ((1, 1), (2, 2))).tolist() == [0, 1, 2, 2, 0]
    assert apply_label_map(mask, ((1, 0), (2, 1))).tolist() == [0, 0, 1, 1, 0]  # drop zone 1
    with pytest.raises(ValueError, match=r"mask values \[2\] are not in the label map"):
        apply_label_map(mask, ((1, 1),))


def test_label_settings_in_the_config():
    cfg = load_config("quick", {"data.num_classes": 3})
    assert cfg.data.label_pairs() == ((1, 1), (2, 2))  # more classes: value v is class v
    assert load_config("quick").data.label_pairs() is None  # binary default
    cfg = load_config("quick", ["data.num_classes=2", "data.label_map={1: 1, 2: 1}"])
    assert cfg.data.label_pairs() == ((1, 1), (2, 1))
    with pytest.raises(ValueError, match="outside"):
        load_config("quick", ["data.label_map={1: 1, 2: 2}"])
    with pytest.raises(ValueError, match="num_classes"):
        load_config("quick", {"data.num_classes": 1})
    # a binary task hashes as before the settings existed: run folders and teachers are kept
    binary, zonal = load_config("quick"), load_config("quick", {"data.num_classes": 3})
    assert config_hash(binary) == config_hash(load_config("quick", {"data.num_classes": 2}))
    assert config_hash(binary) != config_hash(zonal) and teacher_hash(binary) != teacher_hash(zonal)


def test_multiclass_resize_and_metrics():
    mask = np.zeros((1, 8, 8), np.uint8)
    mask[:, 2:6, 2:4], mask[:, 2:6, 4:6] = 1, 2
    small = _resize(np.zeros((1, 8, 8), np.float32), mask, 4, 4)[1]
    assert small[0].tolist() == [[0, 0, 0, 0], [0, 1, 2, 0], [0, 1, 2, 0], [0, 0, 0, 0]]
    gt = torch.from_numpy(mask.astype(np.int64))
    pred = gt.clone()
    pred[pred == 2] = 1  # zone 2 predicted as zone 1
    m = volume_metrics(pred, gt, (1.0, 1.0, 1.0), num_classes=3)
    assert m["dice_c1"] == pytest.approx(2 * 8 / (16 + 8)) and m["dice_c2"] == 0.0
    assert m["dice"] == pytest.approx((m["dice_c1"] + m["dice_c2"]) / 2)
    assert np.isnan(m["hd95_c2"]) and np.isnan(m["hd95"])  # class 2 missing from the prediction
    assert volume_metrics(gt, gt, (1.0, 1.0, 1.0)) == {"dice": 1.0, "hd95": 0.0, "assd": 0.0}  # binary


def test_three_class_end_to_end(tmp_path, capsys):
    root = _zonal_collection(tmp_path / "zonal")
    ref = scan_collection(root)[0][0]
    assert load_case(ref).mask.max() == 1  # binary default: zones merged
    with pytest.raises(DataError, match="not in the label map"):
        load_case(ref, ((1, 1),))
    cfg = load_config("quick", {**TINY, "data.root": str(root), "data.num_classes": 3,
                                "distill.aa_variant": "class_aware", "run.workdir": str(tmp_path / "runs/w")})
    teacher = train_teacher(cfg, progress=False)
    res = train_student(cfg, teacher, progress=False)
    keys = {"dice", "hd95", "assd", "dice_c1", "dice_c2", "hd95_c1", "hd95_c2", "assd_c1", "assd_c2"}
    assert keys <= set(res.heldout) and all(keys <= set(r) for r in res.heldout_per_case)
    assert 0.0 <= res.heldout["dice"] <= 1.0
    meta = load_checkpoint(res.checkpoint)
    assert meta["model"]["num_classes"] == 3 and meta["data"]["label_map"] == [[1, 1], [2, 2]]
    assert load_checkpoint(teacher)["model"]["num_classes"] == 3
    rows, table = evaluate_checkpoint(res.checkpoint, root, site="UCL", cache_dir=tmp_path / "cache")
    assert {"dice_c1", "dice_c2"} <= set(table["all"]) and len(rows) == 3
    assert evaluate_main(["--checkpoint", str(res.checkpoint), "--data", str(root), "--site", "UCL",
                          "--cache-dir", str(tmp_path / "cache")]) == 0
    header = capsys.readouterr().out.splitlines()[0].split()
    assert header == ["case", "Dice", "HD95", "ASSD", "Dice1", "Dice2"]
    assert max(int(np.asarray(r["label"]).max()) for r in _heldout_labels(cfg)) == 2


def _heldout_labels(cfg):
    from relkd_bench.engine import prepare_data

    run = prepare_data(cfg)
    ds = run.split.heldout_dataset(run.cache)
    return [ds[i] for i in range(len(ds))]


def test_per_class_report_tables(tmp_path):
    rows = [{"state": "COMPLETE", "number": i, "student": "enet", "method": m, "heldout": "HK", "seed": s,
             "config_hash": "x", "heldout_dice": 0.5, "heldout_dice_c1": 0.4, "heldout_dice_c2": 0.6,
             "heldout_hd95_c1": 3.0}
            for i, (m, s) in enumerate([("none", 0), ("none", 1), ("AA", 0), ("AA", 1)])]
    back = read_trials_csv(write_trials_csv(rows, tmp_path / "trials.csv"))
    assert back[0]["heldout_dice_c2"] == 0.6 and back[0]["heldout_hd95_c1"] == 3.0
    tables = class_tables(back)
    assert [t.key for t in tables] == ["a1_dice", "a2_dice"] and "class 2" in tables[1].title
    assert class_tables([{k: v for k, v in r.items() if "_c" not in k} for r in rows]) == []
