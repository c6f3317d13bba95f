"""Real data end to end: spacing-aware preprocessing, the `real` preset, and a tiny leave-one-site-out
run on real PROMISE12 cases (two sites, a few steps, one held-out evaluation)."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from relkd_bench.config import load_config, teacher_hash
from relkd_bench.data.preprocess import resample_to_spacing

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "promise12_example"


def _disc(n: int, spacing: float, radius_mm: float) -> np.ndarray:
    c = (np.arange(n) - (n - 1) / 2) * spacing
    return (c[:, None] ** 2 + c[None, :] ** 2 <= radius_mm**2).astype(np.uint8)[None]


def test_common_spacing_gives_the_gland_one_size_at_every_site():
    sizes = []
    for n, spacing in ((160, 0.5), (80, 1.0), (64, 1.5)):  # an 80-96 mm field of view, three resolutions
        mask = _disc(n, spacing, 20.0)
        image = mask.astype(np.float32) * 3.0 - 1.0
        img, msk, new = resample_to_spacing(image, mask, (3.0, spacing, spacing), 1.25, 96)
        assert img.shape == msk.shape == (1, 96, 96) and new == (3.0, 1.25, 1.25)
        assert img.min() == pytest.approx(-1.0)  # padding is the image's background, not 0
        sizes.append(int(msk.sum()))
    area = math.pi * (20.0 / 1.25) ** 2
    assert all(abs(s - area) / area < 0.05 for s in sizes), sizes


def test_crop_keeps_the_centre():
    mask = _disc(200, 1.0, 10.0)  # 200 mm field of view: cropped to 96 × 1.25 = 120 mm
    _, msk, _ = resample_to_spacing(mask.astype(np.float32), mask, (3.0, 1.0, 1.0), 1.25, 96)
    ys, xs = np.nonzero(msk[0])
    assert abs(ys.mean() - 47.5) < 1 and abs(xs.mean() - 47.5) < 1


def test_real_preset_shares_one_teacher_per_fold():
    cfg = load_config("real")
    assert cfg.data.root == "promise12-example" and cfg.teacher.seed == 0
    seeds = {teacher_hash(load_config("real", {"train.seed": s})) for s in (0, 1, 2)}
    assert len(seeds) == 1
    assert teacher_hash(load_config("real", {"data.heldout": "UCL"})) not in seeds
    with pytest.raises(ValueError, match="student.seed"):
        load_config("real", {"student.seed": 1})


@pytest.fixture
def two_site_source(tmp_path) -> Path:
    if not SHARED.is_dir():
        pytest.skip(f"the shared real set is absent ({SHARED})")
    src = tmp_path / "promise12_two_sites"
    src.mkdir()
    for number in (0, 4, 38, 39):  # BIDMC 00, 04; HK 38, 39
        for kind in ("image", "label"):
            shutil.copy(SHARED / f"{kind}_train{number:02d}.npy.gz", src)
    return src


def test_tiny_real_leave_one_site_out_run(two_site_source, tmp_path, monkeypatch):
    from relkd_bench.engine import train_student

    monkeypatch.setenv("RELKD_PROMISE12_NPY", str(two_site_source))
    cfg = load_config("real", {
        "run.workdir": str(tmp_path / "runs" / "real"), "data.size": 32, "data.inplane_spacing": 4.0,
        "data.heldout": "HK", "data.val_fraction": 0.5, "train.epochs": 1, "train.max_steps_per_epoch": 2,
        "train.batch_size": 4, "train.device": "cpu", "distill.lambda_logits": 0.0, "distill.lambda_km": 0.0,
        "distill.lambda_aa": 0.0})
    res = train_student(cfg, None, progress=False)
    assert res.heldout_site == "HK" and res.heldout["n"] == 2
    assert {r["uid"] for r in res.heldout_per_case} == {"HK/Case38", "HK/Case39"}
    assert all(0.0 <= r["dice"] <= 1.0 for r in res.heldout_per_case)
    assert (tmp_path / "runs" / "data" / "promise12-example" / "manifest.json").is_file()
