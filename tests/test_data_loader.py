"""Site registry, NIfTI loader and bad-input handling of relkd_bench.data."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from relkd_bench.data import DataError, load_case, resolve_site, scan_collection, site_names
from relkd_bench.data.inspect import summarize_collection
from relkd_bench.data.nifti import write_nifti

PROMISE = Path(__file__).resolve().parents[2] / "shared" / "data" / "promise12_case00"


def test_site_registry_order_and_aliases():
    assert site_names() == ["RUNMC", "BMC", "I2CVB", "UCL", "BIDMC", "HK"]
    assert resolve_site("HCRUDB").name == "I2CVB"
    assert resolve_site("s5").name == "BIDMC"
    assert resolve_site("F").name == "HK"
    assert resolve_site("site_b").name == "BMC"
    bmc = resolve_site("BMC")
    assert (bmc.n_cases, bmc.field_strength, bmc.coil, bmc.vendor) == (30, "1.5T", "endorectal", "Philips")
    assert [resolve_site(n).n_cases for n in site_names()] == [30, 30, 19, 13, 12, 12]
    with pytest.raises(KeyError, match="unknown site"):
        resolve_site("XYZ")


@pytest.mark.skipif(not PROMISE.is_dir(), reason=f"real case not found at {PROMISE}")
def test_promise12_case_loads_as_one_site_collection():
    cases, bad = scan_collection(PROMISE)
    assert bad == [] and len(cases) == 1
    vol = load_case(cases[0])
    assert vol.image.shape == (128, 128, 64) and vol.image.dtype == np.float32
    assert set(np.unique(vol.mask)) == {0, 1}
    assert vol.mask_volume_ml == pytest.approx(45.67, abs=0.05)
    assert vol.spacing == pytest.approx((1.094, 1.094, 1.616), abs=1e-3)
    summaries, _ = summarize_collection(PROMISE)  # the inspect code path
    assert summaries[0].cases == 1 and summaries[0].shapes[0][2] == 64


# --------------------------------------------------------------------------- bad input
def _case(d: Path, name: str = "Case00", shape=(16, 16, 6), mask_suffix="_segmentation", mask=None,
          image=None, mask_affine=None) -> tuple[Path, Path]:
    d.mkdir(parents=True, exist_ok=True)
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    img = np.random.default_rng(0).random(shape).astype(np.float32) if image is None else image
    if mask is None:
        mask = np.zeros(shape, np.uint8)
        mask[4:10, 4:10, 1:4] = 1
    ip = write_nifti(d / f"{name}.nii.gz", img, aff)
    mp = write_nifti(d / f"{name}{mask_suffix}.nii.gz", mask, aff if mask_affine is None else mask_affine)
    return ip, mp


def _load_one(d: Path):
    cases, _ = scan_collection(d)
    return load_case(cases[0])


def test_good_case_mask_suffix_case_insensitive_and_nii(tmp_path):
    _case(tmp_path / "BMC", mask_suffix="_Segmentation")
    d = tmp_path / "HK"
    d.mkdir()
    write_nifti(d / "Case03.nii", np.ones((8, 8, 4), np.int16), np.eye(4))
    write_nifti(d / "Case03_SEGMENTATION.nii", np.full((8, 8, 4), 2, np.float32), np.eye(4))
    cases, bad = scan_collection(tmp_path)
    assert [c.uid for c in cases] == ["BMC/Case00", "HK/Case03"] and not bad
    assert load_case(cases[1]).mask.max() == 1  # mask > 0 -> 1


def test_truncated_gzip(tmp_path):
    ip, _ = _case(tmp_path / "RUNMC", shape=(64, 64, 16))
    data = ip.read_bytes()
    ip.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="truncated or corrupt") as ei:
        _load_one(tmp_path)
    assert "Case00.nii.gz" in str(ei.value)


def test_garbage_file(tmp_path):
    ip, _ = _case(tmp_path / "RUNMC")
    ip.write_bytes(gzip.compress(b"not a nifti at all"))
    with pytest.raises(DataError, match="Case00.nii.gz.*image"):
        _load_one(tmp_path)


def test_shape_mismatch(tmp_path):
    _case(tmp_path / "UCL", image=np.zeros((16, 16, 5), np.float32))
    with pytest.raises(DataError, match=r"Case00_segmentation.nii.gz: mask shape \(16, 16, 6\) does not"):
        _load_one(tmp_path)


def test_affine_mismatch(tmp_path):
    _case(tmp_path / "UCL", mask_affine=np.diag([1.0, 1.0, 2.0, 1.0]))
    with pytest.raises(DataError, match="Case00_segmentation.nii.gz: mask affine differs"):
        _load_one(tmp_path)


def test_missing_mask(tmp_path):
    _, mp = _case(tmp_path / "BIDMC")
    mp.unlink()
    with pytest.raises(DataError, match="Case00.nii.gz: missing mask"):
        scan_collection(tmp_path)


@pytest.mark.parametrize("value,problem", [(-1.0, "negative values"), (0.5, "non-integer values")])
def test_bad_mask_values(tmp_path, value, problem):
    mask = np.zeros((16, 16, 6), np.float32)
    mask[2, 2, 2] = value
    _case(tmp_path / "HK", mask=mask)
    with pytest.raises(DataError, match=f"Case00_segmentation.nii.gz: mask has {problem}"):
        _load_one(tmp_path)


@pytest.mark.parametrize("shape", [(16, 16), (16, 16, 6, 2)])
def test_not_3d(tmp_path, shape):
    _case(tmp_path / "HK", shape=shape, mask=np.zeros(shape, np.uint8))
    with pytest.raises(DataError, match=f"Case00.nii.gz: image must be a 3-D volume, got {len(shape)}-D"):
        _load_one(tmp_path)


def test_nan_in_image(tmp_path):
    img = np.ones((16, 16, 6), np.float32)
    img[1, 2, 3] = np.nan
    _case(tmp_path / "HK", image=img)
    with pytest.raises(DataError, match="Case00.nii.gz: image contains 1 NaN"):
        _load_one(tmp_path)


def test_empty_and_unknown_site_folders(tmp_path):
    (tmp_path / "BMC").mkdir()
    with pytest.raises(DataError, match="BMC: empty site folder"):
        scan_collection(tmp_path)
    (tmp_path / "BMC").rmdir()
    _case(tmp_path / "Hospital7")
    with pytest.raises(DataError, match="Hospital7: unknown site folder"):
        scan_collection(tmp_path)


def test_skip_bad_reports_instead_of_stopping(tmp_path):
    from relkd_bench.data import PreprocessCache, PreprocessConfig

    _case(tmp_path / "RUNMC", "Case00")
    _case(tmp_path / "RUNMC", "Case01")
    _, mp = _case(tmp_path / "RUNMC", "Case02")
    mp.unlink()  # missing mask
    img = np.ones((16, 16, 6), np.float32)
    img[0, 0, 0] = np.nan
    _case(tmp_path / "RUNMC", "Case03", image=img)  # NaN
    (tmp_path / "BMC").mkdir()  # empty
    _case(tmp_path / "Mystery")  # unknown site
    cases, bad = scan_collection(tmp_path, skip_bad=True)
    assert [c.case_id for c in cases] == ["Case00", "Case01", "Case03"]
    problems = sorted(b.problem.split(":")[0].split(" (")[0] for b in bad)
    assert problems[:2] == ["empty site folder", "missing mask"]
    assert problems[2].startswith("unknown site folder 'Mystery'; expected one of RUNMC, BMC")
    cache = PreprocessCache(PreprocessConfig(size=16), tmp_path / "cache")
    good, bad2 = cache.prepare(cases, skip_bad=True)
    assert [c.case_id for c in good] == ["Case00", "Case01"]
    assert len(bad2) == 1 and bad2[0].path.name == "Case03.nii.gz" and "NaN" in bad2[0].problem
    with pytest.raises(DataError, match="NaN"):
        cache.prepare(cases)
