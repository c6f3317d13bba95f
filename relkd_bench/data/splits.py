"""Leave-one-site-out (LOSO) splits with a seeded case-level validation split of the source sites.

:class:`SiteSplit` holds training and validation cases as public tuples and the held-out cases only
in a private field. Its constructor checks that the three sets are disjoint (by uid and by file) and
that no training/validation case comes from the held-out site, so also ``dataclasses.replace`` cannot
build a leaking split; the datasets it builds refuse held-out cases as well. The held-out cases are
reachable only through :meth:`SiteSplit.heldout_dataset` / :meth:`SiteSplit.heldout_cases`, to be
scored once at the end.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from relkd_bench.data.datasets import LeakageError, SliceDataset, VolumeDataset
from relkd_bench.data.nifti import CaseRef
from relkd_bench.data.preprocess import PreprocessCache
from relkd_bench.data.sites import try_resolve_site

__all__ = ["SiteSplit", "loso_split", "loso_splits"]


@dataclass(frozen=True)
class SiteSplit:
    """One LOSO fold.

    Attributes:
        heldout_site: the site never seen in training or model selection.
        train: training cases (source sites only).
        val: validation cases (source sites only, disjoint from ``train``).
        seed, val_fraction: how the validation split was drawn.
    """

    heldout_site: str
    train: tuple[CaseRef, ...]
    val: tuple[CaseRef, ...]
    _heldout: tuple[CaseRef, ...] = field(repr=False)
    seed: int = 0
    val_fraction: float = 0.2

    def __post_init__(self) -> None:
        groups = {"train": self.train, "val": self.val, "held-out": self._heldout}
        for name, cases in groups.items():
            if len({c.uid for c in cases}) != len(cases):
                raise LeakageError(f"duplicate case in the {name} set")
        for name in ("train", "val"):
            for c in groups[name]:
                if c.site == self.heldout_site:
                    raise LeakageError(f"{name} case {c.uid} comes from the held-out site "
                                       f"{self.heldout_site}")
        for c in self._heldout:
            if c.site != self.heldout_site:
                raise LeakageError(f"held-out case {c.uid} is not from the held-out site {self.heldout_site}")
        keys = {name: {c.uid for c in cases} | {str(c.image_path.resolve()) for c in cases}
                for name, cases in groups.items()}
        for a, b in (("train", "val"), ("train", "held-out"), ("val", "held-out")):
            both = keys[a] & keys[b]
            if both:
                raise LeakageError(f"{a} and {b} sets overlap: {sorted(both)[:3]}")

    @property
    def source_sites(self) -> tuple[str, ...]:
        """Sites of the training/validation cases, in order of appearance."""
        return tuple(dict.fromkeys(c.site for c in self.train + self.val))

    @property
    def n_heldout(self) -> int:
        """Number of held-out cases."""
        return len(self._heldout)

    def heldout_cases(self) -> tuple[CaseRef, ...]:
        """The held-out cases: for the final, single evaluation only."""
        return self._heldout

    def _forbidden(self) -> dict:
        return {"forbidden_site": self.heldout_site, "forbidden_uids": {c.uid for c in self._heldout}}

    def train_dataset(self, cache: PreprocessCache, transform: Callable | None = None,
                      seed: int | None = None) -> SliceDataset:
        """Training slices (prostate slices + sampled empty ones) of the training cases."""
        return SliceDataset(self.train, cache, transform=transform, seed=self.seed if seed is None else seed,
                            **self._forbidden())

    def val_dataset(self, cache: PreprocessCache) -> VolumeDataset:
        """Validation volumes (per-volume 3D evaluation for model selection)."""
        return VolumeDataset(self.val, cache, **self._forbidden())

    def val_slice_dataset(self, cache: PreprocessCache) -> SliceDataset:
        """Validation as slices (all slices, no augmentation)."""
        return SliceDataset(self.val, cache, all_slices=True, **self._forbidden())

    def heldout_dataset(self, cache: PreprocessCache) -> VolumeDataset:
        """Held-out volumes, for the final evaluation."""
        return VolumeDataset(self._heldout, cache)


def _site_seed(seed: int, site: str) -> list[int]:
    return [seed, int(hashlib.sha1(site.encode()).hexdigest()[:8], 16)]


def loso_split(cases: Sequence[CaseRef], heldout: str, val_fraction: float = 0.2, seed: int = 0) -> SiteSplit:
    """Leave site ``heldout`` out; draw ``val_fraction`` of each source site's cases for validation.

    Each source site with at least 2 cases contributes ``max(1, round(val_fraction · n))`` validation
    cases (at most ``n - 1``); the draw depends only on ``seed`` and the site's case ids.

    Raises:
        ValueError: ``heldout`` has no case in ``cases`` or no source site remains.
    """
    known = try_resolve_site(heldout)
    site_names = {c.site for c in cases}
    heldout = known.name if known and known.name in site_names else heldout
    if heldout not in site_names:
        raise ValueError(f"held-out site {heldout!r} has no cases; sites present: {sorted(site_names)}")
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    by_site: dict[str, list[CaseRef]] = {}
    for c in sorted(cases, key=lambda c: c.uid):
        by_site.setdefault(c.site, []).append(c)
    test = tuple(by_site.pop(heldout))
    if not by_site:
        raise ValueError(f"no source site left after holding out {heldout}")
    train: list[CaseRef] = []
    val: list[CaseRef] = []
    for site, group in by_site.items():
        n = len(group)
        n_val = 0 if n < 2 or val_fraction == 0 else min(n - 1, max(1, round(val_fraction * n)))
        perm = np.random.default_rng(_site_seed(seed, site)).permutation(n)
        chosen = set(perm[:n_val].tolist())
        for i, c in enumerate(group):
            (val if i in chosen else train).append(c)
    return SiteSplit(heldout, tuple(train), tuple(val), test, seed=seed, val_fraction=val_fraction)


def loso_splits(cases: Sequence[CaseRef], val_fraction: float = 0.2, seed: int = 0) -> Iterator[SiteSplit]:
    """One :class:`SiteSplit` per site present, in the order the sites appear in ``cases``."""
    for site in dict.fromkeys(c.site for c in cases):
        yield loso_split(cases, site, val_fraction, seed)
