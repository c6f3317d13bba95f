"""Early, one-line failures (issue 16): `train` checks a run before training, NIfTI headers that lie about
their size, and the sqlite relative-path surprise."""

from __future__ import annotations

import gzip
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from relkd_bench import train
from relkd_bench.ablate.storage import make_storage
from relkd_bench.data import DataError, load_case, scan_collection
from relkd_bench.data.nifti import write_nifti


def _case(site_dir: Path, name: str) -> None:
    site_dir.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    aff = np.diag([1.0, 1.0, 3.0, 1.0])
    mask = np.zeros((16, 16, 4), np.uint8)
    mask[4:10, 4:10, 1:3] = 1
    write_nifti(site_dir / f"{name}.nii.gz", rng.random((16, 16, 4)).astype(np.float32), aff)
    write_nifti(site_dir / f"{name}_segmentation.nii.gz", mask, aff)


def _lying_nifti(path: Path, shape: tuple[int, ...]) -> Path:
    """A gzip NIfTI whose header claims ``shape`` but that holds 8 voxels."""
    header = nib.Nifti1Image(np.zeros((2, 2, 2), np.float32), np.eye(4)).header.copy()
    header.set_data_shape(shape)
    with gzip.open(path, "wb") as f:
        f.write(header.binaryblock + b"\0" * 4 + np.zeros(8, np.float32).tobytes())
    return path


@pytest.fixture()
def collection(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for site in ("BIDMC", "HK"):
        for i in range(2):
            _case(root / site, f"Case{i:02d}")
    return root


def _train(capsys, tmp_path: Path, *overrides: str) -> tuple[int, str]:
    rc = train.main(["student", "--config", "quick", "--no-progress", "--workdir", str(tmp_path / "runs"),
                     f"run.workdir={tmp_path / 'runs' / 'quick'}", *overrides])
    return rc, capsys.readouterr().err


@pytest.mark.parametrize("override,message", [
    ("student.name=nosuchnet", "error: unknown model 'nosuchnet'"),
    ("teacher.name=nosuchnet", "error: unknown model 'nosuchnet'"),
    ("distill.km_pairs=[[nosuch,decoder]]", "declares no tap 'nosuch'"),
])
def test_train_refuses_bad_models_and_taps_before_training(capsys, tmp_path, collection, override, message):
    rc, err = _train(capsys, tmp_path, f"data.root={collection}", "data.heldout=HK", "distill.lambda_km=1",
                     override)
    assert rc == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_train_refuses_unknown_heldout_site_and_missing_root(capsys, tmp_path, collection):
    rc, err = _train(capsys, tmp_path, f"data.root={collection}", "data.heldout=NOWHERE")
    assert rc == 2 and err.startswith("error: held-out site 'NOWHERE' has no cases") and err.count("\n") == 1
    rc, err = _train(capsys, tmp_path, f"data.root={tmp_path / 'nowhere'}", "data.heldout=HK")
    assert rc == 2 and err.startswith("error: ") and "nowhere" in err and err.count("\n") == 1


def test_train_on_a_corrupt_collection_names_the_file(capsys, tmp_path, collection):
    image = collection / "HK" / "Case01.nii.gz"
    _lying_nifti(image, (30000, 30000, 30000))
    rc, err = _train(capsys, tmp_path, f"data.root={collection}", "data.heldout=HK", "teacher.epochs=1")
    assert rc == 2 and err.startswith("error: ") and str(image) in err and err.count("\n") == 1, err
    runs = tmp_path / "runs"
    assert not runs.exists() or all(any(p.name != ".lock" for p in d.iterdir()) for d in runs.iterdir())


@pytest.mark.parametrize("name,shape,problem", [
    ("huge.nii.gz", (30000, 30000, 30000), "more than the 1073741824 this loader reads"),
    ("lying.nii.gz", (600, 600, 600), "truncated or corrupt file"),
])
def test_nifti_header_claiming_more_than_the_file_holds(tmp_path, name, shape, problem):
    site = tmp_path / "HK"
    _case(site, "Case00")
    _lying_nifti(site / "Case00.nii.gz", shape)
    cases, _ = scan_collection(tmp_path)
    with pytest.raises(DataError, match=problem) as info:
        load_case(cases[0])
    assert info.value.path == site / "Case00.nii.gz"


def test_sqlite_relative_path_warns_before_creating_a_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.warns(UserWarning, match=r"relative to the working directory.*sqlite:////tmp/x/study.db"):
        make_storage("sqlite:///tmp/x/study.db", "s")
    assert (tmp_path / "tmp" / "x").is_dir()
