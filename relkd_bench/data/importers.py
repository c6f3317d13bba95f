"""Importing public prostate MRI releases into the loader's layout (DESIGN §4).

``import_collection(fmt, src, out)`` writes ``OUT/<SITE>/CaseNN.nii.gz`` + ``CaseNN_segmentation.nii.gz``
and ``OUT/manifest.json`` (source, format, digests of every file read and written, where each case's
spacing came from). Formats:

- ``promise12-npy``: the in-plane-halved PROMISE12 arrays of ``YipengHu/example-data``
  (``image_trainNN.npy.gz`` / ``label_trainNN.npy.gz``, ``(z, y, x)``, no header). Site from the case
  number; spacing from a nominal field of view per site, marked approximate.
- ``promise12``: the official release (``CaseNN.mhd/.raw``, ``CaseNN_segmentation.mhd``), read with
  SimpleITK (ITK's own MetaImage reader; a small wheel, unlike the full ITK that MONAI's ITKReader needs);
  spacing, origin and direction are kept.
- ``msd-prostate``: Medical Segmentation Decathlon Task05 (``imagesTr/prostate_NN.nii.gz``, 4-D T2 + ADC;
  ``labelsTr`` with 1 = peripheral, 2 = transition zone): the T2 channel, the zones merged into the gland
  (``keep_zones=True``: kept as mask values 1 and 2, for ``data.num_classes=3``), one site (Radboud UMC
  Nijmegen, i.e. RUNMC, unless ``site`` says otherwise).
- ``multisite-nii``: the processed six-site release, already in the loader's layout: validated and copied.

Guarantees: nothing is written to OUT until every case has been read and validated (cases are converted
into a hidden staging folder, then moved into place, the manifest last), so a bad input leaves OUT as it
was and an interruption leaves no half-written case. Re-running skips cases whose source and output
digests match the manifest. Every problem is a :class:`~relkd_bench.data.nifti.DataError` naming the file.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from relkd_bench.data.filelock import file_lock
from relkd_bench.data.nifti import CaseRef, DataError, find_cases, load_case, scan_collection, write_nifti

__all__ = [
    "FORMATS",
    "MANIFEST",
    "PROMISE12_NOMINAL",
    "ImportReport",
    "download_msd_prostate",
    "import_collection",
    "promise12_site",
]

MANIFEST = "manifest.json"
FORMATS = ("promise12-npy", "promise12", "msd-prostate", "multisite-nii")

# PROMISE12 case number → site (the split of the multi-site prostate benchmark, Liu et al.).
_PROMISE12_SITES = (("BIDMC", {0, *range(2, 13)}), ("UCL", {1, *range(26, 38)}),
                    ("RUNMC", set(range(13, 26))), ("HK", set(range(38, 50))))

# Nominal acquisition of the in-plane-halved arrays, which carry no header: a fixed field of view per
# site (spacing = FOV / matrix size) and a slice thickness. Only Case00's true spacing is known
# (0.547 mm in-plane after halving, 2.2 mm), which the BIDMC value reproduces at 256 px.
PROMISE12_NOMINAL = {"BIDMC": (140.0, 2.2), "RUNMC": (190.0, 3.6), "UCL": (165.0, 3.6), "HK": (200.0, 3.6)}


@dataclass(frozen=True)
class _Source:
    """One case to import: where it comes from and how to read it.

    ``read()`` returns ``(image [X, Y, Z], mask [X, Y, Z] uint8 {0, 1}, affine 4×4 RAS)``.
    """

    site: str
    case_id: str
    files: tuple[Path, ...]
    spacing_source: str
    read: Callable[[], tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class ImportReport:
    """What one import did: cases written now, cases already present (verified by digest)."""

    out: Path
    written: list[str]
    skipped: list[str]

    def __str__(self) -> str:
        return (f"{self.out}: {len(self.written)} cases written, {len(self.skipped)} already present "
                f"(verified by digest); manifest {self.out / MANIFEST}")


def promise12_site(number: int, path: Path) -> str:
    """Site of PROMISE12 case ``number`` (BIDMC 00, 02–12; UCL 01, 26–37; RUNMC 13–25; HK 38–49)."""
    for site, numbers in _PROMISE12_SITES:
        if number in numbers:
            return site
    raise DataError(path, f"case number {number:02d} belongs to no PROMISE12 site (expected 00-49)")


def lps_affine(spacing_xyz: tuple[float, float, float], direction: np.ndarray | None = None,
               origin: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """NIfTI (RAS) affine of a volume described the ITK way (LPS world, column-major direction).

    ``(z, y, x)`` arrays of an identity-direction ITK image run patient right → left along x and
    anterior → posterior along y: displayed as ``a[z]`` they are in radiological view.
    """
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=np.float64).reshape(3, 3)
    aff = np.eye(4)
    aff[:3, :3] = d @ np.diag(spacing_xyz)
    aff[:3, 3] = origin
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ aff


def _digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _binary_mask(mask: np.ndarray, path: Path) -> np.ndarray:
    if not np.issubdtype(mask.dtype, np.number) or not np.isfinite(mask).all():
        raise DataError(path, f"mask must be finite numbers, got dtype {mask.dtype}")
    if mask.min(initial=0) < 0:
        raise DataError(path, f"mask has negative values (min {mask.min():g})")
    return (mask > 0).astype(np.uint8)


def _same_shape(image: np.ndarray, mask: np.ndarray, image_path: Path, mask_path: Path) -> None:
    if image.shape != mask.shape:
        raise DataError(mask_path, f"mask shape {mask.shape} differs from image shape {image.shape} "
                                   f"({image_path.name})")


# ---- promise12-npy -----------------------------------------------------------------------------------

def _load_npy_gz(path: Path) -> np.ndarray:
    try:
        with gzip.open(path) as fh:
            arr = np.load(fh, allow_pickle=False)
    except (EOFError, zlib.error, OSError, ValueError) as err:
        raise DataError(path, f"truncated or unreadable .npy.gz ({type(err).__name__}: {err})") from err
    if arr.ndim != 3:
        raise DataError(path, f"expected a 3-D (z, y, x) array, got shape {arr.shape}")
    return arr


def _promise12_npy_sources(src: Path) -> list[_Source]:
    pattern = re.compile(r"^(image|label)_train(\d+)\.npy\.gz$")
    found: dict[int, dict[str, Path]] = {}
    for p in sorted(src.iterdir()):
        m = pattern.match(p.name)
        if m:
            found.setdefault(int(m.group(2)), {})[m.group(1)] = p
    if not found:
        raise DataError(src, "no image_trainNN.npy.gz files found (format promise12-npy)")
    sources = []
    for number, files in sorted(found.items()):
        if "image" not in files:
            raise DataError(files["label"], "mask without image: expected "
                                            f"image_train{number:02d}.npy.gz next to it")
        if "label" not in files:
            raise DataError(files["image"], f"image without mask: expected label_train{number:02d}.npy.gz")
        site = promise12_site(number, files["image"])
        sources.append(_Source(site, f"Case{number:02d}", (files["image"], files["label"]),
                               "nominal (approximate)", _npy_reader(files["image"], files["label"], site)))
    return sources


def _npy_reader(image_path: Path, mask_path: Path, site: str) -> Callable:
    def read() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, mask = _load_npy_gz(image_path), _load_npy_gz(mask_path)
        _same_shape(image, mask, image_path, mask_path)
        fov, thickness = PROMISE12_NOMINAL[site]
        _, ny, nx = image.shape
        affine = lps_affine((fov / nx, fov / ny, thickness))
        return image.transpose(2, 1, 0), _binary_mask(mask, mask_path).transpose(2, 1, 0), affine
    return read


# ---- promise12 (MetaImage) ---------------------------------------------------------------------------

def _read_mhd(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(array [X, Y, Z], RAS affine)`` of a MetaImage file, via SimpleITK."""
    try:
        import SimpleITK as sitk
    except ImportError as err:  # a declared dependency; only a broken install gets here
        raise DataError(path, "reading MetaImage needs SimpleITK (pip install SimpleITK)") from err
    try:
        img = sitk.ReadImage(str(path))
    except RuntimeError as err:
        first = str(err).strip().splitlines()
        raise DataError(path, f"unreadable MetaImage ({first[-1] if first else err})") from err
    if img.GetDimension() != 3 or img.GetNumberOfComponentsPerPixel() != 1:
        raise DataError(path, f"expected a 3-D scalar image, got {img.GetDimension()}-D with "
                              f"{img.GetNumberOfComponentsPerPixel()} components")
    arr = sitk.GetArrayFromImage(img)  # (z, y, x)
    affine = lps_affine(img.GetSpacing(), np.array(img.GetDirection()).reshape(3, 3), img.GetOrigin())
    return arr.transpose(2, 1, 0), affine


def _promise12_sources(src: Path) -> list[_Source]:
    pattern = re.compile(r"^case(\d+)(_segmentation)?\.mhd$", re.IGNORECASE)
    found: dict[int, dict[str, Path]] = {}
    for p in sorted(src.rglob("*.mhd")):
        m = pattern.match(p.name)
        if m:
            found.setdefault(int(m.group(1)), {})["mask" if m.group(2) else "image"] = p
    if not found:
        raise DataError(src, "no CaseNN.mhd files found (format promise12)")
    sources = []
    for number, files in sorted(found.items()):
        if "image" not in files:
            raise DataError(files["mask"], f"mask without image: expected Case{number:02d}.mhd")
        if "mask" not in files:
            raise DataError(files["image"], f"image without mask: expected Case{number:02d}_segmentation.mhd")
        site = promise12_site(number, files["image"])
        raws = tuple(_mhd_data_files(p) for p in (files["image"], files["mask"]))
        sources.append(_Source(site, f"Case{number:02d}", (files["image"], files["mask"], *raws), "header",
                               _mhd_reader(files["image"], files["mask"])))
    return sources


def _mhd_data_files(mhd: Path) -> Path:
    """The data file an .mhd header points to (ElementDataFile), so its digest enters the manifest."""
    try:
        header = mhd.read_text(errors="replace")
    except OSError as err:
        raise DataError(mhd, f"cannot read ({err})") from err
    m = re.search(r"^\s*ElementDataFile\s*=\s*(\S+)", header, re.MULTILINE)
    if not m:
        raise DataError(mhd, "MetaImage header has no ElementDataFile line")
    if m.group(1).upper() == "LOCAL":
        return mhd
    data = mhd.parent / m.group(1)
    if not data.is_file():
        raise DataError(data, f"data file named by {mhd.name} does not exist")
    return data


def _mhd_reader(image_path: Path, mask_path: Path) -> Callable:
    def read() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        image, affine = _read_mhd(image_path)
        mask, mask_affine = _read_mhd(mask_path)
        _same_shape(image, mask, image_path, mask_path)
        if not np.allclose(affine, mask_affine, atol=1e-3):
            raise DataError(mask_path, f"mask spacing/origin/direction differ from {image_path.name}'s")
        return image, _binary_mask(mask, mask_path), affine
    return read


# ---- msd-prostate ------------------------------------------------------------------------------------

def _read_nifti(path: Path) -> nib.Nifti1Image:
    try:
        img = nib.load(str(path))
        img.get_fdata(dtype=np.float32)  # reads every byte: a truncated file fails here
    except (EOFError, zlib.error, OSError, ValueError, nib.filebasedimages.ImageFileError) as err:
        raise DataError(path, f"truncated or unreadable NIfTI ({type(err).__name__}: {err})") from err
    return img


def _msd_sources(src: Path, site: str, keep_zones: bool) -> list[_Source]:
    root = src / "Task05_Prostate" if (src / "Task05_Prostate").is_dir() else src
    images_dir, labels_dir = root / "imagesTr", root / "labelsTr"
    if not images_dir.is_dir():
        raise DataError(images_dir, "missing imagesTr folder (format msd-prostate)")
    pattern = re.compile(r"^prostate_(\d+)\.nii\.gz$")
    sources = []
    for p in sorted(images_dir.iterdir()):
        m = pattern.match(p.name)
        if not m:
            continue
        label = labels_dir / p.name
        if not label.is_file():
            raise DataError(p, f"image without mask: expected {label}")
        case_id = f"Case{int(m.group(1)):02d}"
        sources.append(_Source(site, case_id, (p, label), "header", _msd_reader(p, label, keep_zones)))
    if not sources:
        raise DataError(images_dir, "no prostate_NN.nii.gz files found (format msd-prostate)")
    return sources


def _msd_reader(image_path: Path, label_path: Path, keep_zones: bool) -> Callable:
    def read() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img, lab = _read_nifti(image_path), _read_nifti(label_path)
        data = np.asarray(img.dataobj)
        if data.ndim == 4:
            data = data[..., 0]  # channel 0 is T2 (channel 1 is ADC)
        if data.ndim != 3:
            raise DataError(image_path, f"expected a 4-D T2+ADC or 3-D volume, got shape {data.shape}")
        mask = np.asarray(lab.dataobj)
        _same_shape(data, mask, image_path, label_path)
        gland = _binary_mask(mask, label_path)  # zones 1 (PZ) + 2 (TZ) = gland; also checks the values
        return data, (_zones(mask, label_path) if keep_zones else gland), img.affine
    return read


def _zones(mask: np.ndarray, path: Path) -> np.ndarray:
    """MSD Task05 zones as they are: 0 background, 1 peripheral, 2 transition zone."""
    values = set(np.unique(mask).tolist())
    if not values <= {0, 1, 2}:
        raise DataError(path, f"zone mask values must be 0, 1, 2, got {sorted(values)}")
    return mask.astype(np.uint8)


def download_msd_prostate(dest: Path) -> Path:
    """Fetch and extract MSD Task05 into ``dest`` with MONAI's downloader (checksum verified).

    An archive already at ``dest/Task05_Prostate.tar`` whose MD5 matches is extracted without
    downloading, which is also how the tests exercise this path offline.
    """
    from monai.apps import download_url, extractall
    from monai.apps.datasets import DecathlonDataset

    dest.mkdir(parents=True, exist_ok=True)
    archive = dest / "Task05_Prostate.tar"
    try:  # download_url verifies the MD5 of an existing archive too; extractall skips a done extraction
        download_url(DecathlonDataset.resource["Task05_Prostate"], str(archive),
                     hash_val=DecathlonDataset.md5["Task05_Prostate"], hash_type="md5")
        extractall(str(archive), str(dest), has_base=True)
    except (RuntimeError, OSError, ValueError) as err:
        raise DataError(archive, f"download or extraction failed ({type(err).__name__}: {err})") from err
    return dest / "Task05_Prostate"


# ---- multisite-nii -----------------------------------------------------------------------------------

def _multisite_sources(src: Path) -> list[_Source]:
    cases, _ = scan_collection(src)
    return [_Source(ref.site, ref.case_id, (ref.image_path, ref.mask_path), "header", _copy_reader(ref))
            for ref in cases]


def _copy_reader(ref: CaseRef) -> Callable:
    def read() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        vol = load_case(ref)  # validates; the files themselves are copied unchanged
        return vol.image, vol.mask, vol.affine
    return read


# ---- the import --------------------------------------------------------------------------------------

def _sources(fmt: str, src: Path, site: str | None, keep_zones: bool) -> list[_Source]:
    if fmt == "promise12-npy":
        return _promise12_npy_sources(src)
    if fmt == "promise12":
        return _promise12_sources(src)
    if fmt == "msd-prostate":
        return _msd_sources(src, site or "RUNMC", keep_zones)
    if fmt == "multisite-nii":
        return _multisite_sources(src)
    raise DataError(src, f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")


def _read_manifest(out: Path, fmt: str) -> dict:
    path = out / MANIFEST
    if not path.is_file():
        return {"format": fmt, "cases": {}}
    try:
        manifest = json.loads(path.read_text())
        manifest["cases"]  # noqa: B018 - structure check
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise DataError(path, f"corrupt manifest ({err}); remove it to re-import") from err
    if manifest.get("format") != fmt:
        raise DataError(path, f"OUT already holds an import of format {manifest.get('format')!r}, "
                              f"not {fmt!r}; use another OUT folder")
    return manifest


def _is_current(entry: dict | None, out: Path, source_digests: dict[str, str]) -> bool:
    if not entry or entry.get("source_sha256") != source_digests:
        return False
    return all((out / rel).is_file() and _digest(out / rel) == dig for rel, dig in entry["sha256"].items())


def _stage_case(case: _Source, stage: Path, fmt: str) -> dict[str, str]:
    """Convert (or copy) one case into ``stage/<SITE>/``; returns relative output path → digest."""
    image, mask, affine = case.read()
    site_dir = stage / case.site
    site_dir.mkdir(parents=True, exist_ok=True)
    names = (f"{case.case_id}.nii.gz", f"{case.case_id}_segmentation.nii.gz")
    if fmt == "multisite-nii" and all(f.name.endswith(".nii.gz") for f in case.files):
        for f, name in zip(case.files, names):
            shutil.copyfile(f, site_dir / name)
    else:
        dtype = image.dtype if np.issubdtype(image.dtype, np.integer) else np.float32
        write_nifti(site_dir / names[0], np.asarray(image, dtype=dtype), affine)
        write_nifti(site_dir / names[1], np.asarray(mask, dtype=np.uint8), affine)
    staged = find_cases(site_dir, site_name=case.site)[0]
    load_case(next(r for r in staged if r.case_id == case.case_id))  # the loader accepts what we wrote
    return {f"{case.site}/{n}": _digest(site_dir / n) for n in names}


def _spacing(affine: np.ndarray) -> list[float]:
    return [round(float(v), 4) for v in np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))]


def _atomic_json(path: Path, data: dict) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w") as fh:
        json.dump(data, fh, indent=1, sort_keys=True)
    os.replace(tmp, path)


def import_collection(fmt: str, src: str | Path, out: str | Path, site: str | None = None,
                      progress: Callable[[str], None] | None = None,
                      keep_zones: bool = False) -> ImportReport:
    """Import the release at ``src`` (format ``fmt``) into ``out`` (loader layout + manifest).

    Args:
        fmt: one of :data:`FORMATS`.
        src: the release folder as distributed.
        out: collection root to write (created; other files in it are left alone).
        site: site folder for one-site releases (``msd-prostate``; default RUNMC).
        progress: called with one line per case.
        keep_zones: ``msd-prostate`` only: keep the zones (1 peripheral, 2 transition) instead of merging
            them into the gland. The manifest records the choice (``labels``); an OUT imported the other
            way is refused.

    Raises:
        DataError: unknown format, missing/unreadable/truncated file, unpaired image or mask, shapes
            that differ, a case number that belongs to no site, a manifest of another format. OUT is
            unchanged when this is raised.
    """
    src, out = Path(src), Path(out)
    if fmt not in FORMATS:
        raise DataError(src, f"unknown format {fmt!r}; known formats: {', '.join(FORMATS)}")
    if not src.is_dir():
        raise DataError(src, "source folder does not exist")
    if keep_zones and fmt != "msd-prostate":
        raise DataError(src, f"keep_zones: only msd-prostate has zones, not {fmt}")
    sources = _sources(fmt, src, site, keep_zones)
    labels = ("zones" if keep_zones else "gland") if fmt == "msd-prostate" else None
    with file_lock(out.parent / f".{out.name}.import.lock"):  # parallel workers import once
        return _import_locked(fmt, src, out, sources, progress, labels)


def _import_locked(fmt: str, src: Path, out: Path, sources: list[_Source],
                   progress: Callable[[str], None] | None, labels: str | None) -> ImportReport:
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    for stale in out.glob(".import-*"):  # left by an interrupted import
        shutil.rmtree(stale, ignore_errors=True)
    stage = Path(tempfile.mkdtemp(dir=out, prefix=".import-"))
    written, skipped, entries = [], [], {}
    try:
        manifest = _read_manifest(out, fmt)
        if labels is not None:  # an import written before the key existed holds the gland
            held = manifest.get("labels", "gland" if manifest["cases"] else labels)
            if held != labels:
                raise DataError(out / MANIFEST, f"OUT holds masks imported as {held}, not {labels}; use "
                                                "another OUT folder")
            manifest["labels"] = labels
        for case in sources:
            uid = f"{case.site}/{case.case_id}"
            source_digests = {str(f.relative_to(src)): _digest(f) for f in case.files}
            if _is_current(manifest["cases"].get(uid), out, source_digests):
                skipped.append(uid)
                continue
            digests = _stage_case(case, stage, fmt)
            affine = nib.load(str(stage / next(iter(digests)))).affine
            entries[uid] = {"source_sha256": source_digests, "sha256": digests,
                            "spacing_mm": _spacing(affine), "spacing_source": case.spacing_source}
            written.append(uid)
            if progress:
                progress(f"staged {uid}")
        for uid, entry in entries.items():
            for rel in entry["sha256"]:
                (out / rel).parent.mkdir(parents=True, exist_ok=True)
                os.replace(stage / rel, out / rel)
            manifest["cases"][uid] = entry
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        if created:
            shutil.rmtree(out, ignore_errors=True)
        raise
    shutil.rmtree(stage, ignore_errors=True)
    manifest.update(_provenance(fmt, src))
    _atomic_json(out / MANIFEST, manifest)
    return ImportReport(out, written, skipped)


def _provenance(fmt: str, src: Path) -> dict:
    info = {"format": fmt, "source": str(src.resolve())}
    if fmt == "promise12-npy":
        nominal = ", ".join(f"{s} FOV {f:g} mm, {t:g} mm" for s, (f, t) in PROMISE12_NOMINAL.items())
        info["spacing_note"] = ("approximate: no header in the source; in-plane spacing = nominal field of "
                                f"view / matrix size per site, slice thickness nominal ({nominal}). "
                                "HD95, ASSD and volumes depend on it; Dice does not.")
    else:
        info["spacing_note"] = "from the source headers"
    return info
