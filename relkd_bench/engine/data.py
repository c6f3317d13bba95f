"""From the ``data`` config section to the LOSO split, the preprocessed cache and the loaders."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from relkd_bench.config import ExperimentConfig, augment_level
from relkd_bench.data import (
    DataError,
    PreprocessCache,
    PreprocessConfig,
    SiteSplit,
    ensure_synthetic_collection,
    loso_split,
    scan_collection,
)
from relkd_bench.data.augment import build_transforms
from relkd_bench.data.importers import import_collection

__all__ = ["RunData", "cache_dir", "data_root", "make_train_loader", "prepare_data", "preprocess_config",
           "promise12_example_source"]


def _runs_dir(cfg: ExperimentConfig) -> Path:
    return Path(cfg.run.workdir).parent


def promise12_example_source() -> Path:
    """The shared real set (46 PROMISE12 cases, four sites): ``$RELKD_PROMISE12_NPY`` or
    ``../shared/data/promise12_example`` next to the project checkout."""
    env = os.environ.get("RELKD_PROMISE12_NPY")
    return Path(env) if env else Path(__file__).resolve().parents[2].parent / "shared/data/promise12_example"


def data_root(cfg: ExperimentConfig) -> Path:
    """The collection root.

    ``"synthetic"`` → ``<parent of run.workdir>/data/synthetic-c…-s…-z…-r…``, generated on first use;
    ``"promise12-example"`` → ``<parent of run.workdir>/data/promise12-example``, imported on first use
    from :func:`promise12_example_source` (re-imports only what changed, verified by digest).
    """
    if cfg.data.root == "promise12-example":
        src = promise12_example_source()
        if not src.is_dir():
            raise DataError(src, "the shared PROMISE12 example set is not here; set RELKD_PROMISE12_NPY to "
                                 "its folder, or import a release with `python -m relkd_bench.data import` "
                                 "and set data.root to the imported folder")
        return import_collection("promise12-npy", src, _runs_dir(cfg) / "data" / "promise12-example").out
    if cfg.data.root != "synthetic":
        return Path(cfg.data.root)
    s = cfg.data.synthetic
    root = _runs_dir(cfg) / "data" / f"synthetic-c{s.cases_per_site}-s{s.size}-z{s.slices}-r{s.seed}"
    return ensure_synthetic_collection(root, s.cases_per_site, s.size, s.slices, s.seed)


def cache_dir(cfg: ExperimentConfig) -> Path:
    """``data.cache_dir`` or ``<parent of run.workdir>/cache``."""
    return Path(cfg.data.cache_dir) if cfg.data.cache_dir else _runs_dir(cfg) / "cache"


def preprocess_config(cfg: ExperimentConfig) -> PreprocessConfig:
    d = cfg.data
    return PreprocessConfig(size=d.size, normalize=d.normalize, context_slices=d.context_slices,
                            inplane_spacing=d.inplane_spacing, empty_fraction=d.empty_fraction,
                            label_map=d.label_pairs())


@dataclass
class RunData:
    """A LOSO fold ready for training: the split (held-out cases stay private) and the cache."""

    split: SiteSplit
    cache: PreprocessCache
    root: Path


def prepare_data(cfg: ExperimentConfig) -> RunData:
    """Scan (and generate, for synthetic), preprocess/cache all cases, split leave-one-site-out."""
    root = data_root(cfg)
    cases, _ = scan_collection(root)
    cache = PreprocessCache(preprocess_config(cfg), cache_dir(cfg))
    cases, _ = cache.prepare(cases)
    split = loso_split(cases, cfg.data.heldout, cfg.data.val_fraction, cfg.data.split_seed)
    if not split.train:
        raise ValueError(f"no training cases left after holding out {cfg.data.heldout}")
    return RunData(split, cache, root)


def make_train_loader(cfg: ExperimentConfig, run: RunData, epoch: int, seed: int,
                      role: str = "student") -> DataLoader:
    """Shuffled training slices of one epoch, fully determined by ``(seed, epoch)``.

    ``role`` (``teacher``/``student``) picks the augmentation: :func:`~relkd_bench.config.augment_level`.
    Batches: ``image [B, C, H, W]`` float32, ``label [B, 1, H, W]`` int64.
    """
    transform = build_transforms(augment_level(cfg, role), seed=seed, size=cfg.data.size)
    ds = run.split.train_dataset(run.cache, transform=transform, seed=cfg.train.seed)
    ds.set_epoch(epoch)
    gen = torch.Generator().manual_seed(seed)
    workers = cfg.train.num_workers

    def init_worker(worker_id: int) -> None:  # distinct, reproducible augmentation per worker
        if transform is not None:
            transform.set_random_state(seed=torch.initial_seed() % 2**32)

    bs = cfg.train.batch_size
    return DataLoader(ds, batch_size=bs, shuffle=True, generator=gen, num_workers=workers,
                      drop_last=len(ds) > bs, worker_init_fn=init_worker if workers else None,
                      persistent_workers=False, pin_memory=False)
