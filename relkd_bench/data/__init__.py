"""Multi-site prostate MRI data: site registry, NIfTI loader, preprocessing, LOSO splits, synthetic data.

Typical use::

    root = ensure_synthetic_collection("runs/data/synthetic")          # or the real collection root
    cases, bad = scan_collection(root)                                   # CaseRef list, nothing read
    cache = PreprocessCache(PreprocessConfig(size=128, context_slices=3), cache_dir)
    cases, bad = cache.prepare(cases, skip_bad=True)                     # load, validate, cache
    split = loso_split(cases, heldout="BIDMC", val_fraction=0.2, seed=0)
    train = split.train_dataset(cache, transform=train_transforms())     # slices [C,H,W] / [1,H,W]
    val = split.val_dataset(cache)                                       # volumes [D,C,H,W] + spacing
    test = split.heldout_dataset(cache)                                  # scored once, at the end

This package imports nothing from later stages (models, ops, engine).
"""

from relkd_bench.data.augment import AugmentConfig, train_transforms
from relkd_bench.data.datasets import LeakageError, SliceDataset, VolumeDataset
from relkd_bench.data.nifti import BadCase, CaseRef, DataError, Volume, find_cases, load_case, scan_collection
from relkd_bench.data.preprocess import PreparedVolume, PreprocessCache, PreprocessConfig
from relkd_bench.data.sites import SITES, Site, resolve_site, site_names
from relkd_bench.data.splits import SiteSplit, loso_split, loso_splits
from relkd_bench.data.synth import ensure_synthetic_collection, write_synthetic_collection

__all__ = [
    "SITES",
    "AugmentConfig",
    "BadCase",
    "CaseRef",
    "DataError",
    "LeakageError",
    "PreparedVolume",
    "PreprocessCache",
    "PreprocessConfig",
    "Site",
    "SiteSplit",
    "SliceDataset",
    "Volume",
    "VolumeDataset",
    "ensure_synthetic_collection",
    "find_cases",
    "load_case",
    "loso_split",
    "loso_splits",
    "resolve_site",
    "scan_collection",
    "site_names",
    "train_transforms",
    "write_synthetic_collection",
]
