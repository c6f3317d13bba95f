"""Synthetic six-site collection: layout, determinism, domain shift, segmentability, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy import ndimage

from relkd_bench.data import ensure_synthetic_collection, load_case, scan_collection
from relkd_bench.data.__main__ import main
from relkd_bench.data.shift import loo_site_accuracy, site_features
from relkd_bench.data.synth import MARKER_NAME, synth_case, write_synthetic_collection


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_synthetic_collection(tmp_path_factory.mktemp("synth") / "c", 3, 64, 12, seed=3)


def test_layout_matches_real_collection(tiny):
    for site in ("RUNMC", "BMC", "I2CVB", "UCL", "BIDMC", "HK"):
        names = sorted(p.name for p in (tiny / site).iterdir())
        seg = "Segmentation" if site == "BMC" else "segmentation"
        assert names == [f"Case0{i}{s}.nii.gz" for i in range(3) for s in ("", f"_{seg}")]
    cases, bad = scan_collection(tiny)
    assert len(cases) == 18 and not bad
    meta = json.loads((tiny / MARKER_NAME).read_text())
    assert meta["cases_per_site"] == 3 and "synthetic" in meta["note"]


def test_deterministic_per_seed():
    a = synth_case("HK", 2, 48, 8, seed=5)
    b = synth_case("HK", 2, 48, 8, seed=5)
    c = synth_case("HK", 2, 48, 8, seed=6)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_prostate_volume_and_reorientation(tiny):
    cases, _ = scan_collection(tiny)
    vols = [load_case(c) for c in cases]
    ml = np.array([v.mask_volume_ml for v in vols])
    assert ml.min() > 12 and ml.max() < 75, ml
    # RUNMC is stored LPS: after canonical reorientation the voxels equal the generated RAS arrays
    ref = next(c for c in cases if c.uid == "RUNMC/Case01")
    img, mask, spacing = synth_case("RUNMC", 1, 64, 12, seed=3)
    vol = load_case(ref)
    assert np.array_equal(vol.image, img.astype(np.float32)) and np.array_equal(vol.mask, mask)
    assert vol.spacing == pytest.approx(spacing, rel=1e-5)


@pytest.fixture(scope="module")
def medium(tmp_path_factory):
    root = write_synthetic_collection(tmp_path_factory.mktemp("synth") / "m", 6, 96, 16, seed=1)
    cases, _ = scan_collection(root)
    return [load_case(c) for c in cases]


def test_site_shift_is_measurable(medium):
    """After per-volume z-scoring a nearest-centroid classifier tells the sites apart (LOO >= 90 %)."""
    feats = np.stack([site_features(v.image) for v in medium])
    acc = loo_site_accuracy(feats, [v.ref.site for v in medium])
    assert acc >= 0.9, acc


def test_prostate_is_segmentable(medium):
    """The prostate outline is an edge: z-scored gradient on the boundary >> inside the gland."""
    st = np.ones((3, 3, 1))
    for vol in medium:
        z = (vol.image - vol.image.mean()) / vol.image.std()
        g = np.hypot(*np.gradient(ndimage.gaussian_filter(z, (0.7, 0.7, 0)), axis=(0, 1)))
        m = vol.mask.astype(bool)
        edge = ndimage.binary_dilation(m, structure=st) & ~ndimage.binary_erosion(m, structure=st)
        inner = ndimage.binary_erosion(m, iterations=2, structure=st)
        ratio = g[edge].mean() / np.median(g[inner])
        assert ratio > 1.5, (vol.ref.uid, ratio)


def test_ensure_synthetic_collection_redoes_interrupted(tmp_path):
    root = tmp_path / "s"
    ensure_synthetic_collection(root, cases_per_site=1, size=32, slices=6, seed=0)
    marker = root / MARKER_NAME
    first = marker.stat().st_mtime_ns
    assert ensure_synthetic_collection(root, cases_per_site=1, size=32, slices=6, seed=0) == root
    assert marker.stat().st_mtime_ns == first  # present: not regenerated
    marker.unlink()  # simulate an interrupted generation
    (root / "HK" / "Case00.nii.gz").write_bytes(b"partial")
    ensure_synthetic_collection(root, cases_per_site=1, size=32, slices=6, seed=0)
    assert marker.is_file()
    assert load_case(scan_collection(root, sites=["HK"])[0][0]).image.shape == (32, 32, 6)
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError):
        ensure_synthetic_collection(other, cases_per_site=1, size=32, slices=6)


def test_cli_synth_and_inspect(tmp_path, capsys):
    out = tmp_path / "cli"
    assert main(["synth", "--out", str(out), "--cases-per-site", "1", "--size", "32", "--slices", "6"]) == 0
    png = tmp_path / "fig.png"
    assert main(["inspect", str(out), "--png", str(png)]) == 0
    text = capsys.readouterr().out
    assert "| BMC | 1 | 32×32×6 |" in text and png.stat().st_size > 1000
    assert main(["inspect", str(tmp_path / "missing")]) == 2
    assert "collection folder does not exist" in capsys.readouterr().err
    with pytest.raises(SystemExit) as ei:
        main(["--help"])
    assert ei.value.code == 0
