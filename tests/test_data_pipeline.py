"""Preprocessing, cache, leave-one-site-out splits (no leakage), datasets and augmentation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from relkd_bench.data import (
    LeakageError,
    PreprocessCache,
    PreprocessConfig,
    SliceDataset,
    loso_split,
    loso_splits,
    scan_collection,
    train_transforms,
)
from relkd_bench.data.preprocess import select_slices, stack_context
from relkd_bench.data.synth import write_synthetic_collection


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    root = write_synthetic_collection(tmp_path_factory.mktemp("pipe") / "c", 3, 64, 12, seed=11)
    cases, _ = scan_collection(root)
    return root, cases


@pytest.fixture(scope="module")
def cache(collection, tmp_path_factory):
    cache = PreprocessCache(PreprocessConfig(size=32, context_slices=3, empty_fraction=0.5),
                            tmp_path_factory.mktemp("cache"))
    cache.prepare(collection[1])
    return cache


def test_preprocess_shapes_and_zscore(cache, collection):
    vol = cache.get(collection[1][0])
    assert vol.image.shape == (12, 32, 32) and vol.image.dtype == np.float32
    assert vol.mask.shape == (12, 32, 32) and set(np.unique(vol.mask)) <= {0, 1} and vol.mask.any()
    assert vol.spacing[1] == pytest.approx(2 * load_spacing(collection[1][0])[1], rel=1e-5)
    full = PreprocessCache(PreprocessConfig(size=64), cache.dir.parent).get(collection[1][0])
    assert abs(float(np.mean(full.image))) < 1e-3 and float(np.std(full.image)) == pytest.approx(1, abs=1e-3)


def load_spacing(ref):
    from relkd_bench.data import load_case

    sx, sy, sz = load_case(ref).spacing
    return (sz, sy, sx)


def test_percentile_normalization(collection, tmp_path):
    cfg = PreprocessConfig(size=32, normalize="percentile", percentiles=(1, 99))
    vol = PreprocessCache(cfg, tmp_path).get(collection[1][0])
    assert float(np.min(vol.image)) >= 0 and float(np.max(vol.image)) <= 1
    assert cfg.cache_key() != PreprocessConfig(size=32).cache_key()
    assert PreprocessConfig(size=32, context_slices=3).cache_key() == PreprocessConfig(size=32).cache_key()


def test_cache_does_not_reread_nifti(collection, tmp_path, monkeypatch):
    cfg = PreprocessConfig(size=32)
    PreprocessCache(cfg, tmp_path).prepare(collection[1][:2])
    import relkd_bench.data.preprocess as pp

    def boom(ref):
        raise AssertionError("NIfTI re-read")

    monkeypatch.setattr(pp, "load_case", boom)
    again = PreprocessCache(cfg, tmp_path)
    again.prepare(collection[1][:2])
    assert (again.hits, again.misses) == (2, 0)
    assert not list(again.dir.glob("*.tmp"))  # atomic writes leave no temp files


def test_context_and_slice_sampling():
    img = np.arange(5, dtype=np.float32)[:, None, None] * np.ones((5, 4, 4), np.float32)
    ctx = stack_context(img, 0, 3)
    assert ctx.shape == (3, 4, 4) and list(ctx[:, 0, 0]) == [0, 0, 1]
    mask = np.zeros((10, 4, 4), np.uint8)
    mask[3:6, 1, 1] = 1
    idx = select_slices(mask, 0.5, np.random.default_rng(0))
    assert {3, 4, 5} <= set(idx.tolist()) and len(idx) == 3 + 4
    assert list(select_slices(mask, 0.0, np.random.default_rng(0))) == [3, 4, 5]


def test_split_is_seeded_and_case_level(collection):
    cases = collection[1]
    a, b = loso_split(cases, "UCL", seed=4), loso_split(cases, "S4", seed=4)
    assert a == b and a.heldout_site == "UCL" and a.n_heldout == 3
    assert len(a.val) == 5 and len(a.train) == 10  # one validation case per source site
    assert {c.site for c in a.val} == {"RUNMC", "BMC", "I2CVB", "BIDMC", "HK"}


def test_heldout_cases_never_reach_train_or_val(collection, cache):
    cases = collection[1]
    splits = list(loso_splits(cases, seed=0))
    assert [s.heldout_site for s in splits] == ["RUNMC", "BMC", "I2CVB", "UCL", "BIDMC", "HK"]
    for split in splits:
        held = {c.uid for c in split.heldout_cases()}
        assert held == {c.uid for c in cases if c.site == split.heldout_site}
        seen = set()
        train = split.train_dataset(cache, transform=train_transforms(seed=0))
        for batch in DataLoader(train, batch_size=16):
            seen |= set(batch["uid"])
        for item in split.val_dataset(cache):
            seen.add(item["uid"])
        for batch in DataLoader(split.val_slice_dataset(cache), batch_size=16):
            seen |= set(batch["uid"])
        assert seen and not seen & held
        assert {item["uid"] for item in split.heldout_dataset(cache)} == held
        assert "heldout" not in repr(split).replace("heldout_site", "")
        # a split cannot be built (or edited) to leak
        with pytest.raises(LeakageError):
            dataclasses.replace(split, train=split.train + split.heldout_cases()[:1])
        with pytest.raises(LeakageError):
            dataclasses.replace(split, val=split.val + split.train[:1])
        # and the datasets refuse held-out cases directly
        with pytest.raises(LeakageError):
            SliceDataset(split.heldout_cases(), cache, forbidden_site=split.heldout_site)


def test_slice_and_volume_items(collection, cache):
    split = loso_split(collection[1], "HK")
    ds = split.train_dataset(cache, transform=train_transforms(seed=1))
    item = ds[0]
    assert item["image"].shape == (3, 32, 32) and item["image"].dtype == torch.float32
    assert item["label"].shape == (1, 32, 32) and item["label"].dtype == torch.int64
    assert set(item["label"].unique().tolist()) <= {0, 1}
    assert {"uid", "site", "case_id", "slice_index"} <= item.keys()
    n0 = len(ds)
    ds.set_epoch(1)
    assert len(ds) == n0  # same counts, possibly other empty slices
    vol = split.heldout_dataset(cache)[0]
    assert vol["image"].shape == (12, 3, 32, 32) and vol["label"].shape == (12, 32, 32)
    assert len(vol["spacing"]) == 3 and vol["site"] == "HK"


def test_augmentation_keeps_label_binary_and_aligned():
    t = train_transforms(seed=0)
    img = torch.zeros(1, 32, 32)
    img[0, 8:20, 10:22] = 1.0
    lab = (img > 0).long()
    for _ in range(10):
        out = t({"image": img.clone(), "label": lab.clone()})
        o_lab = torch.as_tensor(out["label"])
        assert o_lab.shape == (1, 32, 32) and set(o_lab.unique().tolist()) <= {0, 1}
        assert torch.as_tensor(out["image"]).shape == (1, 32, 32)
