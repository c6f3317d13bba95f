"""`python -m relkd_bench.data import`: every format on fixtures written here, orientation and spacing,
idempotence by digest, nothing partial in OUT on bad input, the shared real set where it exists."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from relkd_bench.data import DataError, load_case, scan_collection
from relkd_bench.data.__main__ import main as data_main
from relkd_bench.data.importers import MANIFEST, PROMISE12_NOMINAL, import_collection, promise12_site
from relkd_bench.data.nifti import write_nifti
from relkd_bench.data.preprocess import to_slices_first

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "promise12_example"


def _volume(shape: tuple[int, int, int], seed: int) -> tuple[np.ndarray, np.ndarray]:
    """An asymmetric (z, y, x) image and a blob mask off-centre, so flips are detectable."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 1000, size=shape).astype(np.int16)
    mask = np.zeros(shape, np.int8)
    z, y, x = shape
    mask[z // 3: 2 * z // 3, y // 4: y // 2, x // 5: x // 2] = 1
    return image, mask


def _write_npy_gz(path: Path, array: np.ndarray) -> None:
    with gzip.open(path, "wb") as fh:
        np.save(fh, array)


def _npy_release(src: Path, cases: dict[int, tuple[int, int, int]]) -> dict[int, np.ndarray]:
    src.mkdir(parents=True, exist_ok=True)
    images = {}
    for number, shape in cases.items():
        image, mask = _volume(shape, number)
        _write_npy_gz(src / f"image_train{number:02d}.npy.gz", image)
        _write_npy_gz(src / f"label_train{number:02d}.npy.gz", mask)
        images[number] = image
    return images


def test_promise12_sites_follow_the_case_numbers(tmp_path):
    expect = {0: "BIDMC", 1: "UCL", 2: "BIDMC", 12: "BIDMC", 13: "RUNMC", 25: "RUNMC", 26: "UCL",
              37: "UCL", 38: "HK", 49: "HK"}
    assert {n: promise12_site(n, tmp_path) for n in expect} == expect
    with pytest.raises(DataError, match="belongs to no PROMISE12 site"):
        promise12_site(50, tmp_path)


def test_promise12_npy_layout_orientation_spacing_manifest(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    images = _npy_release(src, {0: (6, 20, 24), 14: (5, 16, 16)})
    report = import_collection("promise12-npy", src, out)
    assert sorted(report.written) == ["BIDMC/Case00", "RUNMC/Case14"]
    cases, _ = scan_collection(out)
    assert [c.uid for c in cases] == ["RUNMC/Case14", "BIDMC/Case00"]  # site order S1…S6
    for ref, number in zip(cases, (14, 0)):
        vol = load_case(ref)
        # the loader's radiological [D, H, W] view is exactly the source's a[z]
        np.testing.assert_array_equal(to_slices_first(vol.image).astype(np.int16), images[number])
        fov, thickness = PROMISE12_NOMINAL[ref.site]
        width = images[number].shape[2]
        assert vol.spacing == pytest.approx((fov / width, fov / images[number].shape[1], thickness))
    manifest = json.loads((out / MANIFEST).read_text())
    entry = manifest["cases"]["BIDMC/Case00"]
    assert entry["spacing_source"] == "nominal (approximate)" and "approximate" in manifest["spacing_note"]
    digest = hashlib.sha256((src / "image_train00.npy.gz").read_bytes()).hexdigest()
    assert entry["source_sha256"]["image_train00.npy.gz"] == digest
    assert entry["sha256"]["BIDMC/Case00.nii.gz"] == hashlib.sha256(
        (out / "BIDMC" / "Case00.nii.gz").read_bytes()).hexdigest()


def test_reimport_skips_verified_cases_and_redoes_damaged_ones(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _npy_release(src, {0: (4, 8, 8), 40: (4, 8, 8)})
    import_collection("promise12-npy", src, out)
    again = import_collection("promise12-npy", src, out)
    assert again.written == [] and sorted(again.skipped) == ["BIDMC/Case00", "HK/Case40"]
    (out / "HK" / "Case40.nii.gz").write_bytes(b"damaged")
    third = import_collection("promise12-npy", src, out)
    assert third.written == ["HK/Case40"]
    load_case(scan_collection(out / "HK")[0][0])


@pytest.mark.parametrize("damage, problem", [
    ("truncate", "truncated or unreadable"),
    ("no_mask", "image without mask"),
    ("shape", "differs from image shape"),
    ("site", "belongs to no PROMISE12 site"),
])
def test_bad_input_names_the_file_and_leaves_out_untouched(tmp_path, damage, problem):
    src, out = tmp_path / "src", tmp_path / "out"
    _npy_release(src, {0: (4, 8, 8), 13: (4, 8, 8)})
    bad = src / "image_train13.npy.gz"
    if damage == "truncate":
        bad.write_bytes(bad.read_bytes()[:40])
    elif damage == "no_mask":
        (src / "label_train13.npy.gz").unlink()
    elif damage == "shape":
        _write_npy_gz(src / "label_train13.npy.gz", np.zeros((4, 8, 9), np.int8))
    else:
        bad = src / "image_train60.npy.gz"
        _npy_release(src, {60: (4, 8, 8)})
    with pytest.raises(DataError) as err:
        import_collection("promise12-npy", src, out)
    assert problem in str(err.value) and err.value.path.name.endswith(".npy.gz")
    assert not out.exists(), "a failed import must not leave a partial OUT"


def test_failed_reimport_keeps_the_previous_collection(tmp_path):
    src, out = tmp_path / "src", tmp_path / "out"
    _npy_release(src, {0: (4, 8, 8)})
    import_collection("promise12-npy", src, out)
    before = {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    _npy_release(src, {13: (4, 8, 8)})
    (src / "label_train13.npy.gz").write_bytes(b"\x1f\x8b broken")
    with pytest.raises(DataError, match="label_train13"):
        import_collection("promise12-npy", src, out)
    assert {p.name: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_promise12_mhd_keeps_spacing_and_direction(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    src, out = tmp_path / "src", tmp_path / "out"
    src.mkdir()
    image, mask = _volume((5, 12, 10), 3)
    for array, name in ((image, "Case38.mhd"), (mask.astype(np.uint8), "Case38_segmentation.mhd")):
        img = sitk.GetImageFromArray(array)
        img.SetSpacing((0.6, 0.7, 3.5))
        img.SetOrigin((-10.0, 5.0, 2.0))
        sitk.WriteImage(img, str(src / name))  # the reader's own writer: .mhd header + .raw data
    import_collection("promise12", src, out)
    vol = load_case(scan_collection(out)[0][0])
    assert vol.ref.uid == "HK/Case38"
    assert vol.spacing == pytest.approx((0.6, 0.7, 3.5))
    np.testing.assert_array_equal(to_slices_first(vol.image).astype(np.int16), image)
    manifest = json.loads((out / MANIFEST).read_text())["cases"]["HK/Case38"]
    assert manifest["spacing_source"] == "header" and "Case38.raw" in manifest["source_sha256"]


def test_promise12_mhd_with_missing_raw_is_named(tmp_path):
    sitk = pytest.importorskip("SimpleITK")
    src = tmp_path / "src"
    src.mkdir()
    image, mask = _volume((3, 6, 6), 1)
    sitk.WriteImage(sitk.GetImageFromArray(image), str(src / "Case13.mhd"))
    sitk.WriteImage(sitk.GetImageFromArray(mask.astype(np.uint8)), str(src / "Case13_segmentation.mhd"))
    (src / "Case13.raw").unlink()
    with pytest.raises(DataError, match="does not exist") as err:
        import_collection("promise12", src, tmp_path / "out")
    assert err.value.path.name == "Case13.raw"


def _msd_release(root: Path) -> np.ndarray:
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    t2 = np.random.default_rng(0).random((10, 12, 4)).astype(np.float32)
    adc = np.full_like(t2, 7.0)
    zones = np.zeros((10, 12, 4), np.uint8)
    zones[2:5, 3:6, 1:3] = 1
    zones[5:8, 3:6, 1:3] = 2
    affine = np.diag([0.6, 0.6, 3.6, 1.0])
    image = nib.Nifti1Image(np.stack([t2, adc], axis=-1), affine)
    nib.save(image, str(root / "imagesTr" / "prostate_04.nii.gz"))
    nib.save(nib.Nifti1Image(zones, affine), str(root / "labelsTr" / "prostate_04.nii.gz"))
    return t2


def test_msd_prostate_takes_t2_and_merges_the_zones(tmp_path):
    t2 = _msd_release(tmp_path / "Task05_Prostate")
    import_collection("msd-prostate", tmp_path, tmp_path / "out")
    vol = load_case(scan_collection(tmp_path / "out")[0][0])
    assert vol.ref.uid == "RUNMC/Case04"
    np.testing.assert_allclose(vol.image, t2)
    assert vol.mask.sum() == 2 * 3 * 3 * 2 and set(np.unique(vol.mask)) == {0, 1}


def test_msd_prostate_keep_zones(tmp_path):
    _msd_release(tmp_path / "Task05_Prostate")
    import_collection("msd-prostate", tmp_path, tmp_path / "zones", keep_zones=True)
    ref = scan_collection(tmp_path / "zones")[0][0]
    assert set(np.unique(load_case(ref, ((1, 1), (2, 2))).mask)) == {0, 1, 2}
    assert load_case(ref).mask.max() == 1  # the binary default merges them again
    with pytest.raises(DataError, match="imported as zones, not gland"):
        import_collection("msd-prostate", tmp_path, tmp_path / "zones")
    import_collection("msd-prostate", tmp_path, tmp_path / "gland")
    with pytest.raises(DataError, match="imported as gland, not zones"):
        import_collection("msd-prostate", tmp_path, tmp_path / "gland", keep_zones=True)
    with pytest.raises(DataError, match="only msd-prostate has zones"):
        import_collection("promise12", tmp_path, tmp_path / "x", keep_zones=True)


def test_msd_download_path_uses_monai_checksum_on_a_local_archive(tmp_path, monkeypatch):
    from monai.apps.datasets import DecathlonDataset

    from relkd_bench.data.importers import download_msd_prostate

    staging = tmp_path / "staging"
    _msd_release(staging / "Task05_Prostate")
    dest = tmp_path / "dl"
    dest.mkdir()
    with tarfile.open(dest / "Task05_Prostate.tar", "w") as tar:
        tar.add(staging / "Task05_Prostate", arcname="Task05_Prostate")
    md5 = hashlib.md5((dest / "Task05_Prostate.tar").read_bytes()).hexdigest()
    monkeypatch.setitem(DecathlonDataset.md5, "Task05_Prostate", md5)
    monkeypatch.setitem(DecathlonDataset.resource, "Task05_Prostate", "http://127.0.0.1:9/unreachable")
    root = download_msd_prostate(dest)  # archive present with the right MD5: extracted, not fetched
    assert (root / "imagesTr" / "prostate_04.nii.gz").is_file()
    monkeypatch.setitem(DecathlonDataset.md5, "Task05_Prostate", "0" * 32)
    (dest / "Task05_Prostate.tar").write_bytes(b"not the archive")
    with pytest.raises(DataError, match="download or extraction failed"):
        download_msd_prostate(dest)


def test_multisite_nii_is_validated_and_copied(tmp_path):
    src = tmp_path / "src"
    for site, case in (("BMC", "Case01"), ("UCL", "Case02")):
        (src / site).mkdir(parents=True)
        image, mask = _volume((4, 8, 8), 5)
        write_nifti(src / site / f"{case}.nii.gz", image.transpose(2, 1, 0), np.diag([0.5, 0.5, 3.0, 1.0]))
        suffix = "_Segmentation" if site == "BMC" else "_segmentation"
        write_nifti(src / site / f"{case}{suffix}.nii.gz", mask.transpose(2, 1, 0).astype(np.uint8),
                    np.diag([0.5, 0.5, 3.0, 1.0]))
    import_collection("multisite-nii", src, tmp_path / "out")
    copied = (tmp_path / "out" / "BMC" / "Case01.nii.gz").read_bytes()
    assert copied == (src / "BMC" / "Case01.nii.gz").read_bytes()
    assert (tmp_path / "out" / "BMC" / "Case01_segmentation.nii.gz").is_file()
    (src / "UCL" / "Case02_segmentation.nii.gz").unlink()
    with pytest.raises(DataError, match="missing mask"):
        import_collection("multisite-nii", src, tmp_path / "out2")
    assert not (tmp_path / "out2").exists()


def test_cli_one_line_errors_and_success(tmp_path, capsys):
    assert data_main(["import", "nosuchformat", str(tmp_path), str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "unknown format 'nosuchformat'" in err and "\n" not in err
    assert data_main(["import", "promise12-npy", str(tmp_path / "missing"), str(tmp_path / "o")]) == 2
    assert "source folder does not exist" in capsys.readouterr().err
    src = tmp_path / "src"
    _npy_release(src, {0: (4, 8, 8)})
    assert data_main(["import", "promise12-npy", str(src), str(tmp_path / "o"), "--quiet"]) == 0
    assert "1 cases written" in capsys.readouterr().out


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"the shared real set is absent ({SHARED})")
def test_shared_promise12_example_imports_as_four_sites(tmp_path):
    out = tmp_path / "real"
    import_collection("promise12-npy", SHARED, out)
    cases, _ = scan_collection(out)
    counts = {site: sum(c.site == site for c in cases) for site in ("BIDMC", "RUNMC", "UCL", "HK")}
    assert counts == {"BIDMC": 8, "RUNMC": 13, "UCL": 13, "HK": 12}
    vol = load_case(next(c for c in cases if c.case_id == "Case00"))
    assert vol.spacing == pytest.approx((0.546875, 0.546875, 2.2))  # Case00's true spacing, halved
