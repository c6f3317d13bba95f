"""Synthetic six-site prostate T2 MRI collection, written as NIfTI in exactly the real layout.

Anatomy (per case, deterministic in ``(seed, site, case)``): body outline with subcutaneous fat,
muscle, pelvic fat, femoral heads, pubic bones and ischia, bladder, rectum, seminal vesicles and a
prostate shaped as a smoothly deformed ellipsoid (volume about 20–60 mL) with zonal texture
(bright peripheral zone, darker nodular central gland, dark capsule).

Acquisition (per site, see :data:`ACQUISITION`): field of view and slice thickness (partial-volume
averaging of sub-slices along z, in-plane blur for the acquired resolution), T2 contrast gamma and
tissue gains, coil bias field (strong near the rectum for endorectal coils: BMC, BIDMC, HK; mild
smooth field for surface coils), Rician noise with SNR by field strength, vendor intensity scale
and offset, stored as int16. Some sites are stored in LPS orientation to exercise reorientation.

Coordinates are millimetres from the field-of-view centre, RAS+ (x towards the patient's right,
y anterior, z superior); arrays are ``[X, Y, Z]``.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from relkd_bench.data.nifti import write_nifti
from relkd_bench.data.sites import SITES, Site

__all__ = [
    "ACQUISITION",
    "MARKER_NAME",
    "Acquisition",
    "SynthConfig",
    "ensure_synthetic_collection",
    "synth_case",
    "write_synthetic_collection",
]

MARKER_NAME = ".relkd_synthetic.json"
_SUBSLICES = 3  # sub-slices per acquired slice for the partial-volume model


@dataclass(frozen=True)
class Acquisition:
    """Per-site acquisition model.

    Attributes:
        fov_mm: in-plane field of view (square), so pixel size = fov_mm / size.
        coverage_mm: z extent; slice thickness = coverage_mm / slices.
        blur_px: in-plane Gaussian blur (sigma, output pixels) modelling the acquired resolution.
        snr: signal-to-noise ratio of the Rician noise (reference tissue level / sigma).
        gamma: T2 contrast exponent applied to the normalized tissue intensity.
        fat_gain, pz_gain, cg_gain: tissue contrast factors.
        scale, offset: vendor intensity scaling of the stored int16 values.
        coil_gain, coil_length_mm: endorectal coil bias 1 + gain * exp(-d / length) (gain 0: none).
        surface_bias: smooth receive-coil bias ``exp(a·(x/100)² + b·y/100 + c·(y/100)²)`` coefficients
            ``(a, b, c)`` (site pattern; each case adds a small random jitter).
        lps: store the volume in LPS orientation (loader must reorient it).
    """

    fov_mm: float
    coverage_mm: float
    blur_px: float
    snr: float
    gamma: float
    fat_gain: float
    pz_gain: float
    cg_gain: float
    scale: float
    offset: float
    coil_gain: float
    coil_length_mm: float
    surface_bias: tuple[float, float, float]
    lps: bool


ACQUISITION: dict[str, Acquisition] = {
    "RUNMC": Acquisition(230, 86, 0.6, 24, 1.00, 0.95, 1.00, 1.00, 700, 0, 0.0, 1, (0.0, 0.0, 0.45), True),
    "BMC": Acquisition(170, 72, 0.9, 14, 0.70, 1.10, 0.90, 1.10, 2600, 200, 4.0, 22, (0.0, 0.0, 0.0), False),
    "I2CVB": Acquisition(260, 64, 0.0, 45, 1.45, 0.90, 1.00, 0.85, 350, 0, 0.0, 1, (0.5, -0.15, 0.0), False),
    "UCL": Acquisition(200, 80, 1.4, 22, 0.85, 1.00, 1.05, 0.95, 1300, 100, 0.0, 1, (0.0, 0.3, 0.0), True),
    "BIDMC": Acquisition(150, 66, 0.2, 32, 1.00, 0.90, 1.00, 1.05, 1800, 0, 6.0, 16, (0.0, 0.0, 0.0), False),
    "HK": Acquisition(215, 86, 0.7, 9, 1.25, 1.15, 0.95, 1.00, 550, 15, 2.5, 32, (0.0, 0.0, 0.0), True),
}

# tissue labels and reference T2 intensities (0..1)
_AIR, _FAT, _MUSCLE, _PFAT, _CORTEX, _MARROW, _BWALL, _URINE = range(8)
_RWALL, _RLUMEN, _PZ, _CG, _CAPSULE, _SV = range(8, 14)
_T2 = np.array([0.0, 0.85, 0.28, 0.80, 0.06, 0.58, 0.30, 1.00, 0.32, 0.35, 0.60, 0.38, 0.22, 0.92],
               np.float32)


@dataclass(frozen=True)
class SynthConfig:
    """Parameters of a synthetic collection (stored in the marker file)."""

    cases_per_site: int = 10
    size: int = 128
    slices: int = 24
    seed: int = 0
    version: int = 1


def _ellipsoid(x, y, z, c, r) -> np.ndarray:
    """Normalized squared radius of an axis-aligned ellipsoid (broadcast over x, y, z)."""
    return ((x - c[0]) / r[0]) ** 2 + ((y - c[1]) / r[1]) ** 2 + ((z - c[2]) / r[2]) ** 2


def _deformed(x, y, z, c, r, coef: np.ndarray, flat: float) -> np.ndarray:
    """Signed level ``f(n) - rho`` of a smoothly deformed ellipsoid (> 0 inside, ~ fraction of radius)."""
    u, v, w = (x - c[0]) / r[0], (y - c[1]) / r[1], (z - c[2]) / r[2]
    rho = np.sqrt(u * u + v * v + w * w) + 1e-6
    nx, ny, nz = u / rho, v / rho, w / rho
    terms = (nx, ny, nz, nx * nx - ny * ny, ny * ny - nz * nz, nx * ny, ny * nz, nx * nz, nz * nz * nz,
             nx * nx * nz)
    f = 1.0 + sum(a * t for a, t in zip(coef, terms, strict=True))
    f = f * (1.0 - flat * np.minimum(ny, 0.0) ** 2)  # flatter posterior surface (towards the rectum)
    return f - rho


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], cells: tuple[int, int, int],
                  ) -> np.ndarray:
    """Zero-mean, unit-std smooth random field of ``shape`` from a coarse grid of ``cells``."""
    coarse = rng.standard_normal(cells).astype(np.float32)
    field = ndimage.zoom(coarse, [s / c for s, c in zip(shape, cells, strict=True)], order=1, mode="nearest")
    field = field[: shape[0], : shape[1], : shape[2]]
    return (field - field.mean()) / (field.std() + 1e-6)


def synth_case(site: Site | str, case: int, size: int = 128, slices: int = 24, seed: int = 0,
               ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Generate one synthetic case.

    Args:
        site: site (or name) whose acquisition model is used.
        case: case index within the site (part of the random seed).
        size: in-plane matrix (size × size).
        slices: number of axial slices.
        seed: collection seed.

    Returns:
        ``(image, mask, spacing)``: image int16 ``[X, Y, Z]`` (RAS+), mask uint8 ``[X, Y, Z]`` {0, 1},
        spacing ``(dx, dy, dz)`` in mm.
    """
    from relkd_bench.data.sites import resolve_site

    site = resolve_site(site) if isinstance(site, str) else site
    acq = ACQUISITION[site.name]
    rng = np.random.default_rng([seed, site.index, case])
    dx = acq.fov_mm * rng.uniform(0.98, 1.02) / size
    dz = acq.coverage_mm / slices
    nzf = slices * _SUBSLICES
    xs = ((np.arange(size) - (size - 1) / 2) * dx).astype(np.float32)
    zs = ((np.arange(nzf) - (nzf - 1) / 2) * dz / _SUBSLICES).astype(np.float32)
    x, y, z = xs[:, None, None], xs[None, :, None], zs[None, None, :]
    full = (size, size, nzf)
    u = rng.uniform

    # prostate geometry
    vol_ml = u(20.0, 60.0)
    r0 = (vol_ml * 1000.0 / (4.0 / 3.0 * np.pi)) ** (1.0 / 3.0)
    ax, ay = u(1.08, 1.25), u(0.75, 0.9)
    pr = (r0 * ax, r0 * ay, r0 / (ax * ay))
    pc = (u(-4, 4), u(-6, 6), u(-6, 6))
    coef = rng.normal(0.0, 0.045, 10)
    flat = u(0.1, 0.3)

    lab = np.zeros(full, np.uint8)
    # body: superellipse cross-section, subcutaneous fat, muscle, pelvic fat cavity
    bx, by, bcy, p = u(135, 165), u(95, 118), u(0, 12), u(2.2, 2.8)
    tf = u(12, 30)
    grow = 1.0 + 0.0015 * z
    body = (np.abs(x / (bx * grow)) ** p + np.abs((y - bcy) / (by * grow)) ** p) < 1.0
    inner = (np.abs(x / (bx * grow - tf)) ** p + np.abs((y - bcy) / (by * grow - tf)) ** p) < 1.0
    lab[np.broadcast_to(body, full)] = _FAT
    lab[np.broadcast_to(inner, full)] = _MUSCLE
    cav = _ellipsoid(x, y, 0 * z, (0, pc[1] - u(0, 8), 0), (pr[0] + u(22, 32), pr[1] + u(30, 42), 1)) < 1.0
    lab[np.broadcast_to(cav, full)] = _PFAT
    # levator ani / obturator internus: dark muscle columns beside the prostate
    for s in (-1, 1):
        col = _ellipsoid(x, y, 0 * z, (s * (pr[0] + u(10, 16)), pc[1] + u(-4, 4), 0), (u(5, 9), u(22, 30), 1))
        lab[np.broadcast_to(col < 1.0, full)] = _MUSCLE
    # bones: femoral heads, ischia, pubic bones (cortex + marrow)
    zc = pc[2]
    bones = []
    for s in (-1, 1):
        bones.append(((s * u(84, 96), bcy + u(0, 12), zc + u(5, 20)), (u(20, 25),) * 3))
        bones.append(((s * u(50, 62), pc[1] - u(15, 30), zc - u(5, 15)), (u(10, 14), u(14, 20), u(25, 35))))
        pubis = (s * u(9, 13), pc[1] + pr[1] + u(16, 24), zc + u(5, 15))
        bones.append((pubis, (u(8, 11), u(6, 8), u(22, 30))))
    for c, r in bones:
        e = _ellipsoid(x, y, z, c, r)
        lab[e < 1.0] = _CORTEX
        lab[e < (1.0 - 3.0 / min(r)) ** 2] = _MARROW
    # bladder above the prostate
    bc = (u(-5, 5), pc[1] + u(5, 15), pc[2] + pr[2] + u(12, 22))
    br = (u(30, 45), u(24, 34), u(18, 28))
    e = _ellipsoid(x, y, z, bc, br)
    lab[e < 1.0] = _BWALL
    lab[e < (1.0 - 3.0 / min(br)) ** 2] = _URINE
    # rectum behind the prostate (tube along z, slightly curved); balloon-distended with an endorectal coil
    erc = acq.coil_gain > 0
    rr = u(17, 21) if erc else u(11, 16)
    rcx = u(-4, 4)
    rcy = pc[1] - pr[1] - rr - u(2, 5) - 0.08 * (z - pc[2])
    d_rect = np.sqrt((x - rcx) ** 2 + (y - rcy) ** 2)
    in_z = np.abs(z - pc[2]) < 55
    lab[(d_rect < rr) & in_z] = _RWALL
    lab[(d_rect < rr - u(3, 5)) & in_z] = _RLUMEN
    # seminal vesicles: superior-posterior to the prostate (bright, not prostate)
    for s in (-1, 1):
        svc = (pc[0] + s * u(12, 18), pc[1] - pr[1] * 0.4, pc[2] + pr[2] * u(0.8, 1.0))
        lab[_ellipsoid(x, y, z, svc, (u(10, 14), u(4, 6), u(6, 9))) < 1.0] = _SV
    # prostate with capsule, peripheral zone and central gland
    level = _deformed(x, y, z, pc, pr, coef, flat)
    prostate = level > 0
    lab[prostate] = _CAPSULE
    lab[level > 2.5 / min(pr)] = _PZ  # ~2.5 mm dark capsule
    cg_scale = u(0.5, 0.78)
    cgc = (pc[0], pc[1] + 0.25 * pr[1], pc[2] + 0.15 * pr[2])
    cgr = tuple(r * cg_scale for r in pr)
    cg = (_deformed(x, y, z, cgc, cgr, rng.normal(0.0, 0.06, 10), 0.1) > 0) & prostate
    lab[cg] = _CG

    # tissue intensities with site contrast; partial volume: average sub-slices
    t2 = _T2.copy()
    t2[[_FAT, _PFAT, _MARROW]] *= acq.fat_gain
    t2[_PZ] *= acq.pz_gain
    t2[_CG] *= acq.cg_gain
    t2[_RLUMEN] = 0.04 if erc else u(0.15, 0.45)
    t2 *= np.float32(u(0.93, 1.07))
    img = t2[lab].reshape(size, size, slices, _SUBSLICES).mean(axis=3)
    mask = (prostate.reshape(size, size, slices, _SUBSLICES).mean(axis=3) >= 0.5).astype(np.uint8)
    cg_occ = cg.reshape(size, size, slices, _SUBSLICES).mean(axis=3)

    # tissue texture and nodular central gland
    shape = (size, size, slices)
    cells = (max(4, size // 10), max(4, size // 10), max(3, slices // 3))
    img *= 1.0 + 0.06 * _smooth_field(rng, shape, cells)
    nod_cells = (max(4, int(acq.fov_mm / 6)), max(4, int(acq.fov_mm / 6)), max(3, slices // 2))
    img *= 1.0 + 0.22 * cg_occ * _smooth_field(rng, shape, nod_cells)
    if acq.blur_px > 0:
        img = ndimage.gaussian_filter(img, (acq.blur_px, acq.blur_px, 0.0), mode="nearest")
    img = np.clip(img, 0.0, None) ** np.float32(acq.gamma)

    # coil sensitivity (bias field)
    xo, yo, zo = x[:, :, :1], y[:, :, :1], zs.reshape(slices, _SUBSLICES).mean(axis=1)[None, None, :]
    if erc:
        rcy_o = pc[1] - pr[1] - rr - 3.5 - 0.08 * (zo - pc[2])
        d = np.sqrt((xo - rcx) ** 2 + (yo - rcy_o) ** 2 + np.maximum(np.abs(zo - pc[2]) - 20.0, 0.0) ** 2)
        bias = 1.0 + acq.coil_gain * u(0.8, 1.2) * np.exp(-np.maximum(d - rr, 0.0) / acq.coil_length_mm)
    else:
        a = np.asarray(acq.surface_bias) + rng.normal(0.0, 0.04, 3)
        xn, yn = xo / 100.0, yo / 100.0
        bias = np.exp(a[0] * xn**2 + a[1] * yn + a[2] * yn**2 + rng.normal(0.0, 0.03) * zo / 100.0)
    img = img * bias.astype(np.float32)

    # Rician noise, vendor scale/offset, int16
    sigma = 0.5 / acq.snr
    n1 = rng.standard_normal(shape, dtype=np.float32) * sigma
    n2 = rng.standard_normal(shape, dtype=np.float32) * sigma
    img = np.sqrt((img + n1) ** 2 + n2**2)
    out = np.clip(img * acq.scale * u(0.85, 1.15) + acq.offset, 0, 32767).round().astype(np.int16)
    return out, mask, (float(dx), float(dx), float(dz))


def write_synthetic_collection(out: str | Path, cases_per_site: int = 10, size: int = 128, slices: int = 24,
                               seed: int = 0, sites: tuple[str, ...] | None = None) -> Path:
    """Write the synthetic collection ``out/<SITE>/CaseNN.nii.gz`` + ``CaseNN_segmentation.nii.gz``.

    BMC masks use the capital ``_Segmentation`` like the real collection. A marker file with the
    parameters is written last (see :func:`ensure_synthetic_collection`).

    Returns:
        ``out`` as a :class:`~pathlib.Path`.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    marker = out / MARKER_NAME
    marker.unlink(missing_ok=True)
    cfg = SynthConfig(cases_per_site, size, slices, seed)
    chosen = [s for s in SITES if sites is None or s.name in sites]
    t0 = time.perf_counter()
    for site in chosen:
        d = out / site.name
        d.mkdir(exist_ok=True)
        suffix = "_Segmentation" if site.name == "BMC" else "_segmentation"
        for i in range(cases_per_site):
            image, mask, spacing = synth_case(site, i, size, slices, seed)
            affine = np.diag([*spacing, 1.0])
            affine[:3, 3] = [-(size - 1) / 2 * spacing[0], -(size - 1) / 2 * spacing[1],
                             -(slices - 1) / 2 * spacing[2]]
            if ACQUISITION[site.name].lps:  # same voxels, stored flipped in x and y with an LPS affine
                image, mask = image[::-1, ::-1].copy(), mask[::-1, ::-1].copy()
                affine[:2, :2] *= -1
                affine[:2, 3] *= -1
            write_nifti(d / f"Case{i:02d}.nii.gz", image, affine)
            write_nifti(d / f"Case{i:02d}{suffix}.nii.gz", mask, affine)
    meta = {**asdict(cfg), "sites": [s.name for s in chosen], "seconds": round(time.perf_counter() - t0, 2),
            "note": "synthetic data generated by relkd_bench.data.synth; not patient data"}
    tmp = marker.with_suffix(".tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, marker)
    return out


def ensure_synthetic_collection(root: str | Path, cases_per_site: int = 10, size: int = 128, slices: int = 24,
                                seed: int = 0) -> Path:
    """Return ``root`` holding the synthetic collection with these parameters, generating it if needed.

    The collection counts as present only when its marker file (written last) matches the
    parameters, so an interrupted generation is redone. A non-empty ``root`` without a marker is
    never overwritten.

    Raises:
        FileExistsError: ``root`` exists, is not empty and is not a synthetic collection.
    """
    root = Path(root)
    marker = root / MARKER_NAME
    want = asdict(SynthConfig(cases_per_site, size, slices, seed))
    if marker.is_file():
        try:
            have = json.loads(marker.read_text())
        except (OSError, ValueError):
            have = {}
        if all(have.get(k) == v for k, v in want.items()) and have.get("sites") == [s.name for s in SITES]:
            return root
    elif root.exists() and any(p.name != MARKER_NAME for p in root.iterdir()):
        site_dirs = {s.name for s in SITES}
        if not all(p.name in site_dirs for p in root.iterdir()):
            raise FileExistsError(f"{root}: not empty and not a synthetic collection (no {MARKER_NAME}); "
                                  "refusing to overwrite")
    if root.exists():  # stale or interrupted synthetic collection: start clean
        for s in SITES:
            shutil.rmtree(root / s.name, ignore_errors=True)
    return write_synthetic_collection(root, cases_per_site, size, slices, seed)
