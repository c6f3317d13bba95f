"""Finding and loading cases of the layout ``ROOT/<SITE>/CaseNN.nii.gz`` + ``CaseNN_segmentation.nii.gz``.

Every problem with the input is raised as :class:`DataError`, whose message names the file and the
problem (never only a traceback from inside nibabel). Collection-level functions take
``skip_bad=True`` to collect the problems as :class:`BadCase` records instead of stopping.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from relkd_bench.data.labels import LabelMap, apply_label_map
from relkd_bench.data.sites import SITES, site_names, try_resolve_site

__all__ = [
    "BadCase",
    "CaseRef",
    "DataError",
    "Volume",
    "find_cases",
    "load_case",
    "scan_collection",
    "write_nifti",
]

# A header's claimed size is checked before any voxel is read, so a file that lies about it (30000³ voxels
# in a few bytes) is a DataError naming it instead of a MemoryError inside nibabel. The limit is far beyond
# any MRI volume (512 × 512 × 1024 is 2.7e8) and far below what would exhaust memory; deflate compresses at
# most about 1032:1, so a .nii.gz cannot hold more than that many times its own size.
MAX_VOXELS = 2**30
_MAX_DEFLATE_RATIO = 1032

_NIFTI_RE = re.compile(r"^(?P<stem>.+?)\.nii(\.gz)?$", re.IGNORECASE)
_MASK_SUFFIX = "_segmentation"


class DataError(ValueError):
    """A problem with one input file or folder.

    Attributes:
        path: the offending file or folder.
        problem: a short description of the problem.
    """

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class BadCase:
    """A case (or folder) that was skipped, with the reason."""

    path: Path
    problem: str

    @classmethod
    def from_error(cls, err: DataError) -> BadCase:
        return cls(err.path, err.problem)

    def __str__(self) -> str:
        return f"{self.path}: {self.problem}"


@dataclass(frozen=True)
class CaseRef:
    """Where one case lives on disk (nothing is read).

    Attributes:
        site: canonical site name (``"BMC"``) or, for a one-site folder that is not a known site,
            the name given by the caller / the folder name.
        case_id: file stem of the image, e.g. ``"Case07"``.
        image_path, mask_path: the two NIfTI files.
    """

    site: str
    case_id: str
    image_path: Path
    mask_path: Path

    @property
    def uid(self) -> str:
        """Collection-unique id ``"<site>/<case_id>"``."""
        return f"{self.site}/{self.case_id}"


@dataclass
class Volume:
    """One loaded, validated case in canonical (RAS+) orientation.

    Attributes:
        image: float32 array ``[X, Y, Z]`` (Z = axial slices, inferior → superior).
        mask: uint8 array ``[X, Y, Z]`` of classes: the input mask through the label map (default:
            values > 0 → 1, see :mod:`relkd_bench.data.labels`).
        spacing: voxel size ``(sx, sy, sz)`` in mm, from the header.
        affine: 4×4 voxel-to-world matrix of the canonical arrays.
        ref: where the case came from.
    """

    image: np.ndarray
    mask: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    ref: CaseRef

    @property
    def mask_volume_ml(self) -> float:
        """Volume of every non-background class (the prostate) in millilitres."""
        return float(np.count_nonzero(self.mask) * np.prod(self.spacing) / 1000.0)


def _nifti_stem(path: Path) -> str | None:
    m = _NIFTI_RE.match(path.name)
    return m.group("stem") if m else None


def _is_nifti_dir(path: Path) -> bool:
    return any(p.is_file() and _nifti_stem(p) for p in path.iterdir())


def find_cases(site_dir: str | Path, site_name: str | None = None,
               skip_bad: bool = False) -> tuple[list[CaseRef], list[BadCase]]:
    """Pair the images and masks of one site folder.

    Args:
        site_dir: folder holding ``CaseNN.nii[.gz]`` and ``CaseNN_segmentation.nii[.gz]`` (the mask
            suffix is matched case-insensitively, so BMC's ``_Segmentation`` works).
        site_name: site to record in the :class:`CaseRef`; default: the folder name, resolved to the
            canonical name when it is a known site or alias.
        skip_bad: collect images without a mask (and masks without an image) as :class:`BadCase`
            instead of raising.

    Returns:
        ``(cases, bad)``, cases sorted by ``case_id``.

    Raises:
        DataError: the folder is missing or holds no case; a mask or image is missing (unless
            ``skip_bad``).
    """
    site_dir = Path(site_dir)
    if not site_dir.is_dir():
        raise DataError(site_dir, "site folder does not exist")
    name = site_name or site_dir.name
    known = try_resolve_site(name)
    site = known.name if known else name
    images: dict[str, Path] = {}
    masks: dict[str, Path] = {}
    for p in sorted(site_dir.iterdir()):
        stem = _nifti_stem(p)
        if stem is None or not p.is_file() or p.name.startswith("."):
            continue
        if stem.lower().endswith(_MASK_SUFFIX):
            masks[stem[: -len(_MASK_SUFFIX)]] = p
        else:
            images[stem] = p
    if not images and not masks:
        raise DataError(site_dir, "empty site folder: no CaseNN.nii[.gz] files found")
    cases: list[CaseRef] = []
    bad: list[BadCase] = []
    for case_id in sorted(set(images) | set(masks)):
        if case_id not in masks:
            err = DataError(images[case_id], f"missing mask: expected {case_id}{_MASK_SUFFIX}.nii.gz "
                                             "(suffix matched case-insensitively) next to it")
        elif case_id not in images:
            err = DataError(masks[case_id], f"mask without image: expected {case_id}.nii.gz next to it")
        else:
            cases.append(CaseRef(site, case_id, images[case_id], masks[case_id]))
            continue
        if not skip_bad:
            raise err
        bad.append(BadCase.from_error(err))
    return cases, bad


def scan_collection(root: str | Path, sites: Iterable[str] | None = None, skip_bad: bool = False,
                    site_name: str | None = None) -> tuple[list[CaseRef], list[BadCase]]:
    """Index a collection without reading any voxel.

    ``root`` is either a collection root with one sub-folder per site (any subset of the six sites,
    any alias as folder name) or a single site folder holding NIfTI files directly (a one-site
    collection, e.g. ``shared/data/promise12_case00``; its site is ``site_name`` or the folder name).

    Args:
        root: collection root or single site folder.
        sites: restrict to these sites (any alias); default all found.
        skip_bad: report unknown/empty site folders and unpaired files as :class:`BadCase` instead
            of raising.
        site_name: site name for a one-site folder.

    Returns:
        ``(cases, bad)``, cases in site order S1…S6 then by ``case_id``.

    Raises:
        DataError: missing root, unknown or empty site folder, missing mask (unless ``skip_bad``).
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "collection folder does not exist")
    if _is_nifti_dir(root):
        return find_cases(root, site_name=site_name, skip_bad=skip_bad)
    wanted = None
    if sites is not None:
        wanted = set()
        for s in sites:
            site = try_resolve_site(s)
            if site is None:
                raise DataError(root, f"unknown site {s!r} requested; known sites: {', '.join(site_names())}")
            wanted.add(site.name)
    cases: list[CaseRef] = []
    bad: list[BadCase] = []
    seen: dict[str, Path] = {}
    subdirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for sub in subdirs:
        try:
            site = try_resolve_site(sub.name)
            if site is None:
                raise DataError(sub, f"unknown site folder {sub.name!r}; expected one of "
                                     f"{', '.join(site_names())} (or aliases S1…S6, A…F, HCRUDB)")
            if site.name in seen:
                raise DataError(sub, f"site {site.name} appears twice (also as {seen[site.name]})")
            seen[site.name] = sub
            if wanted is not None and site.name not in wanted:
                continue
            found, bad_here = find_cases(sub, site_name=site.name, skip_bad=skip_bad)
        except DataError as err:
            if not skip_bad:
                raise
            bad.append(BadCase.from_error(err))
            continue
        cases.extend(found)
        bad.extend(bad_here)
    if not cases and not bad:
        raise DataError(root, "no site folders with cases found (expected ROOT/<SITE>/CaseNN.nii.gz)")
    order = {s.name: s.index for s in SITES}
    cases.sort(key=lambda c: (order.get(c.site, len(order)), c.site, c.case_id))
    return cases, bad


def _check_claimed_size(path: Path, what: str, img: nib.Nifti1Image) -> None:
    """The header's voxel count within MAX_VOXELS, and its data size within what the file can hold."""
    shape = tuple(int(n) for n in img.shape)
    voxels = int(np.prod(shape, dtype=object))
    if voxels > MAX_VOXELS:
        raise DataError(path, f"{what}: the header claims shape {shape} ({voxels} voxels), more than the "
                              f"{MAX_VOXELS} this loader reads; corrupt header?")
    claimed = voxels * img.get_data_dtype().itemsize + int(img.header["vox_offset"])
    size = path.stat().st_size
    gz = path.name.lower().endswith(".gz")
    if claimed > size * (_MAX_DEFLATE_RATIO if gz else 1):
        most = size * _MAX_DEFLATE_RATIO
        held = f"a {size}-byte gzip file holds at most {most}" if gz else f"it has {size}"
        raise DataError(path, f"{what}: truncated or corrupt file: the header claims shape {shape} "
                              f"({claimed} bytes) but {held}")


def _read(path: Path, what: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, ...]]:
    """Read one NIfTI as canonical (RAS+) array; every failure becomes a DataError naming ``path``."""
    if not path.is_file():
        raise DataError(path, f"{what} file does not exist")
    if path.stat().st_size == 0:
        raise DataError(path, f"{what} file is empty (0 bytes)")
    try:
        img = nib.load(str(path))
        if not isinstance(img, nib.Nifti1Image | nib.Nifti2Image):
            raise DataError(path, f"{what} is not a NIfTI image ({type(img).__name__})")
        _check_claimed_size(path, what, img)
        ndim = len(img.shape)
        if ndim == 4 and img.shape[3] == 1:
            img = img.slicer[..., 0]
        elif ndim != 3:
            raise DataError(path, f"{what} must be a 3-D volume, got {ndim}-D shape {tuple(img.shape)}")
        raw_affine = img.affine.copy()
        img = nib.as_closest_canonical(img)
        data = np.asarray(img.dataobj)
    except DataError:
        raise
    except MemoryError as err:
        raise DataError(path, f"{what}: too large to load into memory") from err
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        problem = "truncated or corrupt file" if isinstance(err, EOFError | zlib.error) else "cannot read"
        raise DataError(path, f"{what}: {problem} ({type(err).__name__}: {err})") from err
    zooms = tuple(float(z) for z in img.header.get_zooms()[:3])
    return data, raw_affine, img.affine.copy(), zooms


def load_case(ref: CaseRef, label_map: LabelMap | None = None) -> Volume:
    """Load and validate one case; ``label_map`` turns mask values into classes (``None``: > 0 → 1).

    Checks: both files readable (truncated gzip is caught), 3-D (a trailing singleton 4th axis is
    dropped), equal shapes and affines, finite image values, mask values non-negative integers.

    Returns:
        :class:`Volume` with image float32 ``[X, Y, Z]`` and mask uint8 ``[X, Y, Z]`` in RAS+.

    Raises:
        DataError: naming the offending file and the problem.
    """
    image, img_aff, canon_aff, zooms = _read(ref.image_path, "image")
    mask, mask_aff, _, _ = _read(ref.mask_path, "mask")
    if image.shape != mask.shape:
        raise DataError(ref.mask_path, f"mask shape {mask.shape} does not match image shape {image.shape} "
                                       f"({ref.image_path.name})")
    if not np.allclose(img_aff, mask_aff, atol=1e-3 * max(1.0, float(np.abs(img_aff[:3, :3]).max()))):
        raise DataError(ref.mask_path, f"mask affine differs from the image affine ({ref.image_path.name}):"
                                       f"\nimage {img_aff.round(4).tolist()}"
                                       f"\nmask  {mask_aff.round(4).tolist()}")
    if not np.issubdtype(image.dtype, np.number):
        raise DataError(ref.image_path, f"image has non-numeric dtype {image.dtype}")
    image = image.astype(np.float32, copy=False)
    finite = np.isfinite(image)
    if not finite.all():
        n_nan = int(np.isnan(image).sum())
        raise DataError(ref.image_path, f"image contains {n_nan} NaN and {int((~finite).sum()) - n_nan} "
                                        "infinite values")
    if not np.issubdtype(mask.dtype, np.number):
        raise DataError(ref.mask_path, f"mask has non-numeric dtype {mask.dtype}")
    if not np.isfinite(mask).all():
        raise DataError(ref.mask_path, "mask contains NaN or infinite values")
    mmin = float(mask.min()) if mask.size else 0.0
    if mmin < 0:
        raise DataError(ref.mask_path, f"mask has negative values (min {mmin:g}); expected labels >= 0")
    if np.issubdtype(mask.dtype, np.floating) and not np.all(mask == np.round(mask)):
        odd = mask[mask != np.round(mask)]
        raise DataError(ref.mask_path, f"mask has non-integer values (e.g. {float(odd.flat[0]):g}); "
                                       "expected integer labels")
    try:
        classes = apply_label_map(mask, label_map)
    except ValueError as err:
        raise DataError(ref.mask_path, str(err)) from err
    return Volume(image=np.ascontiguousarray(image), mask=classes,
                  spacing=(zooms[0], zooms[1], zooms[2]), affine=canon_aff, ref=ref)


def write_nifti(path: str | Path, data: np.ndarray, affine: np.ndarray) -> Path:
    """Write array ``data`` ``[X, Y, Z]`` with voxel-to-world ``affine`` (4×4) to ``path`` (``.nii[.gz]``).

    qform and sform are both set (code 1); zooms follow from the affine.
    """
    img = nib.Nifti1Image(data, np.asarray(affine, dtype=np.float64))
    img.set_qform(img.affine, code=1)
    img.set_sform(img.affine, code=1)
    nib.save(img, str(path))
    return Path(path)
