"""BigAug-style augmentation and the augmentation levels: shapes, binary labels that move with the image,
determinism for a seed, the bias field on z-scored slices, and the level each role's loader uses."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
import torch

import relkd_bench.engine.data as engine_data
from relkd_bench.config import AUGMENT_LEVELS as CONFIG_LEVELS
from relkd_bench.config import load_config
from relkd_bench.data.augment import (
    AUGMENT_LEVELS,
    BigAugConfig,
    RandBiasFieldZd,
    bigaug_transforms,
    build_transforms,
)

SPATIAL = ("flip_prob", "rotate_prob", "zoom_prob", "elastic_prob")


def _square(channels: int = 1, size: int = 64) -> dict:
    lab = torch.zeros(1, size, size, dtype=torch.int64)
    lab[0, 20:44, 24:40] = 1
    img = lab.float().repeat(channels, 1, 1) * 2.0 - 0.5 + 0.05 * torch.randn(channels, size, size,
                                                                             generator=torch.Generator().manual_seed(0))
    return {"image": img, "label": lab}


def _run(t, d: dict) -> tuple[torch.Tensor, torch.Tensor]:
    out = t({"image": d["image"].clone(), "label": d["label"].clone()})
    return torch.as_tensor(out["image"]), torch.as_tensor(out["label"])


def _only(**probs: float) -> BigAugConfig:
    """Every probability 0 except the given ones."""
    zero = {f.name: 0.0 for f in dataclasses.fields(BigAugConfig) if f.name.endswith("_prob")}
    return BigAugConfig(**{**zero, **probs})


@pytest.mark.parametrize("channels", [1, 3])
def test_bigaug_keeps_shapes_dtypes_and_binary_labels(channels):
    t = bigaug_transforms(seed=0, size=64)
    d = _square(channels)
    for _ in range(25):
        img, lab = _run(t, d)
        assert img.shape == (channels, 64, 64) and img.dtype == torch.float32
        assert lab.shape == (1, 64, 64)
        assert torch.isfinite(img).all()
        assert set(lab.unique().tolist()) <= {0.0, 1.0}


def test_labels_move_with_the_image_under_spatial_transforms():
    """Spatial transforms only (probability 1): the thresholded image and the label stay aligned."""
    t = bigaug_transforms(_only(**dict.fromkeys(SPATIAL, 1.0)), seed=3, size=64)
    d = _square()
    moved = 0
    for _ in range(20):
        img, lab = _run(t, d)
        fg = img > 0.5  # the square is 1.5 above the background
        dice = 2 * (fg & lab.bool()).sum() / (fg.sum() + lab.sum())
        assert dice > 0.95, float(dice)
        moved += int(not torch.equal(lab, d["label"].to(lab.dtype)))
    assert moved >= 18  # the test checks something: the label did move


def test_zoom_keeps_label_and_image_pixel_exact():
    """RandZoomd with ``nearest-exact`` for the label (MONAI's ``nearest`` is off by up to one pixel)."""
    t = bigaug_transforms(_only(zoom_prob=1.0), seed=1, size=64)
    d = _square()
    d["image"] = d["label"].float()
    exact = 0
    for _ in range(10):
        img, lab = _run(t, d)
        wrong = int(((img > 0.5) != lab.bool()).sum())
        assert wrong <= 0.06 * lab.sum(), wrong  # at most one edge row where the bilinear image is 0.5
        exact += wrong == 0
    assert exact >= 8


def test_full_pipeline_keeps_the_gland_recognisable():
    t = bigaug_transforms(seed=5, size=64)
    d = _square()
    for _ in range(20):
        img, lab = _run(t, d)
        fg, bg = img[0][lab[0].bool()], img[0][~lab[0].bool()]
        assert fg.mean() > bg.mean() + 0.5  # intensity transforms keep the order of tissue intensities


def test_deterministic_for_a_seed():
    d = _square(3)
    a, b, c = (bigaug_transforms(seed=s, size=64) for s in (7, 7, 8))
    outs_a = [_run(a, d) for _ in range(5)]
    outs_b = [_run(b, d) for _ in range(5)]
    outs_c = [_run(c, d) for _ in range(5)]
    for (ia, la), (ib, lb) in zip(outs_a, outs_b, strict=True):
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    assert any(not torch.equal(ia, ic) for (ia, _), (ic, _) in zip(outs_a, outs_c, strict=True))


def test_bias_field_keeps_slice_stats_and_shares_one_field_across_channels():
    t = RandBiasFieldZd("image", coeff=0.3, prob=1.0)
    t.set_random_state(0)
    img = torch.randn(1, 48, 48).repeat(3, 1, 1)  # identical context channels
    out = torch.as_tensor(t({"image": img})["image"])
    assert not torch.allclose(out, img)
    torch.testing.assert_close(out.mean(), img.mean(), atol=1e-4, rtol=0)
    torch.testing.assert_close(out.std(), img.std(), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out[0], out[1]) and torch.testing.assert_close(out[0], out[2])
    assert out.argmin() == img.argmin()  # air (the minimum) stays the darkest value


def test_levels_build_and_match_the_config():
    assert AUGMENT_LEVELS == CONFIG_LEVELS
    assert build_transforms("none") is None
    assert build_transforms("standard", seed=0) is not None and build_transforms("bigaug", seed=0) is not None
    with pytest.raises(ValueError, match="bigaug"):
        build_transforms("strong")


def test_each_role_trains_with_its_own_level(monkeypatch):
    """make_train_loader builds the role's level (teacher.augment for the teacher's loader)."""
    seen = []

    def fake_build(level, seed=None, size=96):
        seen.append(level)
        return None

    class _DS(torch.utils.data.Dataset):
        def set_epoch(self, epoch):
            pass

        def __len__(self):
            return 2

        def __getitem__(self, i):
            return {"image": torch.zeros(1, 4, 4), "label": torch.zeros(1, 4, 4, dtype=torch.int64)}

    split = SimpleNamespace(train_dataset=lambda cache, transform, seed: _DS())
    run = SimpleNamespace(split=split, cache=None)
    monkeypatch.setattr(engine_data, "build_transforms", fake_build)
    cfg = load_config("quick", {"teacher.augment": "bigaug", "train.batch_size": 2})
    engine_data.make_train_loader(cfg, run, 0, 0, role="teacher")
    engine_data.make_train_loader(cfg, run, 0, 0, role="student")
    no_aug = load_config("quick", {"data.augment": False, "teacher.augment": None})
    engine_data.make_train_loader(no_aug, run, 0, 0, role="teacher")
    assert seen == ["bigaug", "standard", "none"]


def test_teacher_training_uses_the_teacher_level(monkeypatch, tmp_path):
    """Through train_teacher → fit: the loader is asked for the teacher's role (its augmentation)."""
    import relkd_bench.engine.trainer as trainer
    from relkd_bench.engine import train_teacher

    roles = []
    real = trainer.make_train_loader

    def spy(*args, **kwargs):
        roles.append(kwargs.get("role", "student"))
        return real(*args, **kwargs)

    monkeypatch.setattr(trainer, "make_train_loader", spy)
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    warn = torch.is_deterministic_algorithms_warn_only_enabled()
    tiny = {"data.synthetic.cases_per_site": 3, "data.synthetic.size": 32, "data.synthetic.slices": 6,
            "data.size": 32, "data.heldout": "UCL", "teacher.epochs": 1, "train.batch_size": 4,
            "train.max_steps_per_epoch": 1, "train.threads": 1, "train.device": "cpu",
            "teacher.kwargs.channels": [4, 8, 16, 32], "teacher.kwargs.strides": [2, 2, 2],
            "teacher.augment": "bigaug", "run.workdir": str(tmp_path / "runs" / "w")}
    try:
        train_teacher(load_config("quick", tiny), progress=False)
    finally:
        torch.set_num_threads(threads)
        torch.use_deterministic_algorithms(det, warn_only=warn)
    assert roles == ["teacher"]
