"""Torch datasets over preprocessed cases: 2D (or 2.5D) training slices and whole volumes.

Both datasets refuse cases of a ``forbidden_site`` / ``forbidden_uids`` at construction; the
leave-one-site-out split (:mod:`relkd_bench.data.splits`) sets these so that held-out cases cannot
reach training or validation.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

from relkd_bench.data.nifti import CaseRef
from relkd_bench.data.preprocess import PreparedVolume, PreprocessCache, select_slices, stack_context

__all__ = ["LeakageError", "SliceDataset", "VolumeDataset"]


class LeakageError(RuntimeError):
    """A held-out case was about to enter a training or validation dataset."""


def _guard(cases: Sequence[CaseRef], forbidden_site: str | None, forbidden_uids: Collection[str]) -> None:
    for c in cases:
        if (forbidden_site is not None and c.site == forbidden_site) or c.uid in forbidden_uids:
            raise LeakageError(f"case {c.uid} ({c.image_path}) is held out and must not be used here")


def _plain(x) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class SliceDataset(Dataset):
    """Axial slices of preprocessed cases.

    Each item is a dict: ``image`` float32 ``[C, H, W]`` (C = ``cfg.context_slices``), ``label`` int64
    ``[1, H, W]`` {0, 1}, ``uid``, ``site``, ``case_id`` (str) and ``slice_index`` (int).

    Args:
        cases: cases to draw slices from.
        cache: preprocessed-volume cache (its config gives size, context and empty fraction).
        transform: optional MONAI dict transform applied to ``{"image", "label"}`` (augmentation).
        all_slices: use every slice instead of prostate slices + a fraction of empty ones.
        seed: seed of the empty-slice sampling; :meth:`set_epoch` redraws it.
        forbidden_site, forbidden_uids: cases that must not appear (raises :class:`LeakageError`).
    """

    def __init__(self, cases: Sequence[CaseRef], cache: PreprocessCache, transform: Callable | None = None,
                 all_slices: bool = False, seed: int = 0, forbidden_site: str | None = None,
                 forbidden_uids: Collection[str] = ()) -> None:
        _guard(cases, forbidden_site, forbidden_uids)
        self.cases = tuple(cases)
        self.cache = cache
        self.transform = transform
        self.all_slices = all_slices
        self.seed = seed
        self.volumes: list[PreparedVolume] = [cache.get(c) for c in self.cases]
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        """Redraw the sampled empty slices (deterministic in ``(seed, epoch)``)."""
        index: list[tuple[int, int]] = []
        for i, vol in enumerate(self.volumes):
            if self.all_slices:
                sl = np.arange(vol.image.shape[0])
            else:
                rng = np.random.default_rng([self.seed, epoch, i])
                sl = select_slices(np.asarray(vol.mask), self.cache.cfg.empty_fraction, rng)
            index.extend((i, int(s)) for s in sl)
        self.index = index

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, item: int) -> dict:
        i, s = self.index[item]
        vol = self.volumes[i]
        image = torch.from_numpy(stack_context(vol.image, s, self.cache.cfg.context_slices))
        label = torch.from_numpy(np.array(vol.mask[s : s + 1], dtype=np.int64))
        data = {"image": image, "label": label}
        if self.transform is not None:
            data = self.transform(data)
        ref = vol.ref
        return {"image": _plain(data["image"]).float().contiguous(),
                "label": _plain(data["label"]).round().long().contiguous(),
                "uid": ref.uid, "site": ref.site, "case_id": ref.case_id, "slice_index": s}


class VolumeDataset(Dataset):
    """Whole preprocessed volumes for per-volume 3D evaluation.

    Each item is a dict: ``image`` float32 ``[D, C, H, W]`` (every slice with its 2.5D context, ready
    to be fed as a batch of D slices), ``label`` int64 ``[D, H, W]``, ``spacing`` ``(sz, sy, sx)`` in mm
    (as a tuple of floats), ``uid``, ``site``, ``case_id``. Use ``batch_size=None`` in a DataLoader.
    """

    def __init__(self, cases: Sequence[CaseRef], cache: PreprocessCache, forbidden_site: str | None = None,
                 forbidden_uids: Collection[str] = ()) -> None:
        _guard(cases, forbidden_site, forbidden_uids)
        self.cases = tuple(cases)
        self.cache = cache

    def __len__(self) -> int:
        return len(self.cases)

    def __getitem__(self, item: int) -> dict:
        vol = self.cache.get(self.cases[item])
        k = self.cache.cfg.context_slices
        image = np.stack([stack_context(vol.image, s, k) for s in range(vol.image.shape[0])])
        ref = vol.ref
        return {"image": torch.from_numpy(image), "label": torch.from_numpy(np.array(vol.mask, np.int64)),
                "spacing": tuple(float(v) for v in vol.spacing), "uid": ref.uid, "site": ref.site,
                "case_id": ref.case_id}
