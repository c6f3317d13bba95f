"""Volume preprocessing and the on-disk cache of preprocessed volumes.

Pipeline per case: load (:func:`~relkd_bench.data.nifti.load_case`, RAS+ ``[X, Y, Z]``) → slices-first
radiological layout ``[D, H, W]`` (D = axial slices inferior → superior, rows anterior → posterior,
columns patient right → left) → per-volume intensity normalization (z-score or percentile clipping)
→ in-plane either resized to ``size × size`` (MONAI ``Resize``: the whole field of view, so the gland's
size in pixels varies with each site's field of view) or resampled to a common spacing and
centre-cropped or padded to ``size × size`` (as nnU-Net does: the gland has the same size in pixels at
every site). The result is cached on disk under a folder named by the hash of the volume-affecting
config fields, so repeated runs do not re-read NIfTI.
Slice sampling and 2.5D context are applied later, per slice, by the datasets.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from monai.transforms import NormalizeIntensity, Resize, ResizeWithPadOrCrop, ScaleIntensityRangePercentiles

from relkd_bench.data.labels import LabelMap
from relkd_bench.data.nifti import BadCase, CaseRef, DataError, Volume, load_case

__all__ = [
    "CACHE_VERSION",
    "PreparedVolume",
    "PreprocessCache",
    "PreprocessConfig",
    "default_cache_dir",
    "normalize_intensity",
    "preprocess_volume",
    "resample_inplane",
    "resample_to_spacing",
    "select_slices",
    "stack_context",
    "to_slices_first",
]

CACHE_VERSION = 1


@dataclass(frozen=True)
class PreprocessConfig:
    """Preprocessing options.

    Attributes:
        size: in-plane target size (384 as in the paper; 96/128 for CPU runs).
        normalize: ``"zscore"`` (per volume) or ``"percentile"`` (clip to ``percentiles``, scale to [0, 1]).
        percentiles: lower/upper percentile for ``"percentile"``.
        context_slices: k adjacent slices as channels (1 = 2D, 3 = 2.5D); must be odd.
        empty_fraction: fraction of the slices without prostate sampled for training (all slices with
            prostate are always used).
        inplane_spacing: ``None`` → resize the whole slice to ``size``; a value in mm → resample to that
            in-plane spacing, then centre crop/pad to ``size`` (padding with the volume's minimum).
        label_map: ``(mask value, class)`` pairs (:mod:`relkd_bench.data.labels`); ``None`` → binary
            (mask > 0 → 1).
    """

    size: int = 384
    normalize: Literal["zscore", "percentile"] = "zscore"
    percentiles: tuple[float, float] = (0.5, 99.5)
    context_slices: int = 1
    empty_fraction: float = 0.2
    inplane_spacing: float | None = None
    label_map: LabelMap | None = None

    def __post_init__(self) -> None:
        if self.inplane_spacing is not None and not 0.05 <= self.inplane_spacing <= 10.0:
            raise ValueError(f"inplane_spacing must be None or in [0.05, 10] mm, got {self.inplane_spacing}")
        if self.size < 8:
            raise ValueError(f"size must be >= 8, got {self.size}")
        if self.normalize not in ("zscore", "percentile"):
            raise ValueError(f"normalize must be 'zscore' or 'percentile', got {self.normalize!r}")
        if self.context_slices < 1 or self.context_slices % 2 == 0:
            raise ValueError(f"context_slices must be odd and >= 1, got {self.context_slices}")
        if not 0.0 <= self.empty_fraction <= 1.0:
            raise ValueError(f"empty_fraction must be in [0, 1], got {self.empty_fraction}")
        lo, hi = self.percentiles
        if not 0.0 <= lo < hi <= 100.0:
            raise ValueError(f"percentiles must satisfy 0 <= lower < upper <= 100, got {self.percentiles}")

    def volume_fields(self) -> dict:
        """The fields that change the cached volumes (slice sampling and context do not)."""
        d = {"size": self.size, "normalize": self.normalize, "version": CACHE_VERSION}
        if self.normalize == "percentile":
            d["percentiles"] = list(self.percentiles)
        if self.inplane_spacing is not None:  # absent when unset: caches of resized volumes keep their key
            d["inplane_spacing"] = self.inplane_spacing
        if self.label_map is not None:  # absent for the binary default: binary caches keep their key
            d["label_map"] = [list(pair) for pair in self.label_map]
        return d

    def cache_key(self) -> str:
        """Short hash of :meth:`volume_fields`, naming the cache folder."""
        return hashlib.sha1(json.dumps(self.volume_fields(), sort_keys=True).encode()).hexdigest()[:12]


@dataclass
class PreparedVolume:
    """A preprocessed case.

    Attributes:
        image: float32 ``[D, H, W]`` normalized intensities (may be a read-only memmap).
        mask: uint8 ``[D, H, W]`` classes (binary by default: {0, 1}).
        spacing: ``(sz, sy, sx)`` voxel size in mm after resampling, in ``[D, H, W]`` order.
        ref: source case.
    """

    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    ref: CaseRef


def to_slices_first(array: np.ndarray) -> np.ndarray:
    """RAS+ ``[X, Y, Z]`` → radiological ``[D, H, W]`` (anterior up, patient right on the left)."""
    return np.ascontiguousarray(array.transpose(2, 1, 0)[:, ::-1, ::-1])


def normalize_intensity(image: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """Per-volume intensity normalization (MONAI) of any-shape float array; returns float32."""
    if cfg.normalize == "zscore":
        out = NormalizeIntensity(nonzero=False)(image.astype(np.float32))
    else:
        lo, hi = cfg.percentiles
        scale = ScaleIntensityRangePercentiles(lo, hi, b_min=0.0, b_max=1.0, clip=True)
        out = scale(image.astype(np.float32))
    return np.asarray(out, dtype=np.float32)


def resample_inplane(image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], size: int,
                     ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Resize ``[D, H, W]`` image and mask in-plane to ``[D, size, size]`` (MONAI ``Resize``).

    The image uses area averaging when shrinking and bilinear interpolation when enlarging; the mask
    is interpolated bilinearly and thresholded at 0.5 (more than two classes: each class's indicator is
    interpolated and the largest wins, see :func:`_resize_classes`). ``spacing`` is ``(sz, sy, sx)``.

    Returns:
        ``(image float32, mask uint8, new spacing)``.
    """
    _, h, w = image.shape
    image, mask = _resize(image, mask, size, size)
    return image, mask, (float(spacing[0]), float(spacing[1]) * h / size, float(spacing[2]) * w / size)


def resample_to_spacing(image: np.ndarray, mask: np.ndarray, spacing: Sequence[float], target_mm: float,
                        size: int) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Resample ``[D, H, W]`` in-plane to ``target_mm`` spacing, then centre crop/pad to ``size × size``.

    Resampling is :func:`resample_inplane`'s (area when shrinking, bilinear when enlarging, mask
    thresholded at 0.5); padding uses the image's minimum (background) and 0 for the mask.

    Returns:
        ``(image float32 [D, size, size], mask uint8, spacing (sz, target, target))``.
    """
    _, h, w = image.shape
    new_h = max(1, round(h * float(spacing[1]) / target_mm))
    new_w = max(1, round(w * float(spacing[2]) / target_mm))
    image, mask = _resize(image, mask, new_h, new_w)
    background = float(image.min()) if image.size else 0.0
    fit = ResizeWithPadOrCrop((-1, size, size), mode="constant")
    img = fit(torch.from_numpy(image - background)[None])[0] + background
    msk = fit(torch.from_numpy(mask)[None])[0]
    return (np.asarray(img, np.float32), np.asarray(msk, np.uint8),
            (float(spacing[0]), float(target_mm), float(target_mm)))


def _resize(image: np.ndarray, mask: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    _, h0, w0 = image.shape
    if (h0, w0) == (h, w):
        return image.astype(np.float32), mask.astype(np.uint8)
    mode = "area" if h < h0 and w < w0 else "bilinear"  # area only when shrinking along both axes
    img = Resize((-1, h, w), mode=mode)(torch.from_numpy(np.ascontiguousarray(image, np.float32))[None])
    if mask.size and mask.max() > 1:
        return np.asarray(img[0], np.float32), _resize_classes(mask, h, w)
    msk = Resize((-1, h, w), mode="bilinear")(torch.from_numpy(np.ascontiguousarray(mask, np.float32))[None])
    return np.asarray(img[0], np.float32), (np.asarray(msk[0]) >= 0.5).astype(np.uint8)


def _resize_classes(mask: np.ndarray, h: int, w: int) -> np.ndarray:
    """Resize a label volume ``[D, H, W]`` holding classes above 1: each class's indicator is interpolated
    bilinearly and every pixel takes the class with the largest value (the lower class wins a tie).
    A volume of classes {0, 1} keeps the binary rule of :func:`_resize` (indicator >= 0.5)."""
    classes = np.arange(int(mask.max()) + 1)
    onehot = (mask[None] == classes[:, None, None, None]).astype(np.float32)  # [K, D, H, W], K as channels
    soft = Resize((-1, h, w), mode="bilinear")(torch.from_numpy(onehot))
    return np.asarray(torch.as_tensor(soft).argmax(0), np.uint8)


def preprocess_volume(vol: Volume, cfg: PreprocessConfig) -> PreparedVolume:
    """Loaded :class:`Volume` → :class:`PreparedVolume` (layout, normalization, in-plane geometry)."""
    image = normalize_intensity(to_slices_first(vol.image), cfg)
    mask = to_slices_first(vol.mask)
    sx, sy, sz = vol.spacing
    if cfg.inplane_spacing is None:
        image, mask, spacing = resample_inplane(image, mask, (sz, sy, sx), cfg.size)
    else:
        image, mask, spacing = resample_to_spacing(image, mask, (sz, sy, sx), cfg.inplane_spacing, cfg.size)
    return PreparedVolume(image, mask, spacing, vol.ref)


def stack_context(image: np.ndarray, index: int, k: int) -> np.ndarray:
    """Channels ``[k, H, W]``: slices ``index - k//2 … index + k//2`` of ``[D, H, W]`` (edges replicated)."""
    idx = np.clip(np.arange(index - k // 2, index + k // 2 + 1), 0, image.shape[0] - 1)
    return np.ascontiguousarray(image[idx], dtype=np.float32)


def select_slices(mask: np.ndarray, empty_fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices (sorted) of all slices of ``mask [D, H, W]`` with prostate plus a random
    ``round(empty_fraction · n_empty)`` of the empty ones."""
    has = mask.reshape(mask.shape[0], -1).any(axis=1)
    full, empty = np.flatnonzero(has), np.flatnonzero(~has)
    n = int(round(empty_fraction * len(empty)))
    pick = rng.choice(empty, size=n, replace=False) if n else np.empty(0, np.int64)
    return np.sort(np.concatenate([full, pick])).astype(np.int64)


def default_cache_dir() -> Path:
    """``$RELKD_CACHE`` or ``~/.cache/relkd_bench/preprocessed``."""
    env = os.environ.get("RELKD_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "relkd_bench" / "preprocessed"


def _file_sig(path: Path) -> list:
    st = path.stat()
    return [str(path.resolve()), st.st_size, st.st_mtime_ns]


def _atomic_save(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            write(fh)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class PreprocessCache:
    """Disk cache of :class:`PreparedVolume` keyed by config hash and source-file signature.

    Layout: ``cache_dir/<cfg.cache_key()>/<site>_<case>_<hash>.{image,mask}.npy`` plus a ``.json``
    written last (atomic writes: temp file then ``os.replace``), so an interrupted write is redone.
    Cached arrays are memory-mapped read-only.
    """

    def __init__(self, cfg: PreprocessConfig, cache_dir: str | Path | None = None) -> None:
        self.cfg = cfg
        self.dir = Path(cache_dir if cache_dir is not None else default_cache_dir()) / cfg.cache_key()
        self.hits = 0
        self.misses = 0

    def _stem(self, ref: CaseRef) -> Path:
        sig = json.dumps([ref.uid, _file_sig(ref.image_path), _file_sig(ref.mask_path)])
        h = hashlib.sha1(sig.encode()).hexdigest()[:16]
        safe = "".join(ch if ch.isalnum() or ch in "-." else "_" for ch in ref.uid)
        return self.dir / f"{safe}_{h}"

    def get(self, ref: CaseRef) -> PreparedVolume:
        """Preprocessed volume of ``ref``, from the cache or computed and stored.

        Raises:
            DataError: the case cannot be loaded (see :func:`load_case`).
        """
        if not ref.image_path.is_file():
            raise DataError(ref.image_path, "image file does not exist")
        if not ref.mask_path.is_file():
            raise DataError(ref.mask_path, "mask file does not exist")
        stem = self._stem(ref)
        meta_path = stem.with_suffix(".json")
        if meta_path.is_file():
            try:
                meta = json.loads(meta_path.read_text())
                image = np.load(f"{stem}.image.npy", mmap_mode="r")
                mask = np.load(f"{stem}.mask.npy", mmap_mode="r")
                self.hits += 1
                return PreparedVolume(image, mask, tuple(meta["spacing"]), ref)
            except (OSError, ValueError, KeyError):
                pass  # damaged entry: recompute
        self.misses += 1
        prep = preprocess_volume(load_case(ref, self.cfg.label_map), self.cfg)
        self.dir.mkdir(parents=True, exist_ok=True)
        _atomic_save(Path(f"{stem}.image.npy"), lambda fh: np.save(fh, prep.image))
        _atomic_save(Path(f"{stem}.mask.npy"), lambda fh: np.save(fh, prep.mask))
        meta = {"uid": ref.uid, "spacing": list(prep.spacing), "config": asdict(self.cfg),
                "image": str(ref.image_path), "mask": str(ref.mask_path)}
        _atomic_save(meta_path, lambda fh: fh.write(json.dumps(meta, indent=1).encode()))
        return prep

    def prepare(self, cases: Sequence[CaseRef], skip_bad: bool = False,
                ) -> tuple[list[CaseRef], list[BadCase]]:
        """Load, validate and cache every case.

        Returns:
            ``(good cases, bad cases)``; with ``skip_bad=False`` the first bad case raises.
        """
        good: list[CaseRef] = []
        bad: list[BadCase] = []
        for ref in cases:
            try:
                self.get(ref)
            except DataError as err:
                if not skip_bad:
                    raise
                bad.append(BadCase.from_error(err))
                continue
            good.append(ref)
        return good, bad
