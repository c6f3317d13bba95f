"""Report: tables (Markdown, LaTeX, CSV) with provenance and bold best, figures, trials.csv round trip."""

from __future__ import annotations

import csv
import math

import pytest

from relkd_bench.ablate import make_storage, run_worker, spec_from_dict
from relkd_bench.report import Stat, dice_table, read_trials_csv
from relkd_bench.report.__main__ import main

DICE = {"none": 0.70, "LM": 0.74, "KM": 0.72, "LM+KM": 0.80}


def _objective(trial, plan):
    seed, site = plan.params["seed"], plan.params["heldout"]
    bonus = 0.1 if site == "UCL" and plan.method == "KM" else 0.0  # KM wins on UCL, LM+KM on BIDMC
    trial.set_user_attr("method", plan.method)
    for k, v in {"seed": seed, "heldout": site, "student": "enet", "teacher": "unet_wide",
                 "heldout_dice": DICE[plan.method] + bonus + 0.01 * seed,
                 "heldout_hd95": 10 - 5 * DICE[plan.method],
                 "teacher_heldout_dice": 0.85, "commit": "abc1234", "config_hash": f"h{trial.number:03d}",
                 "data_source": "synthetic", "hardware": "test CPU", "backend": "native-cpu"}.items():
        trial.set_user_attr(k, v)
    if plan.method == "LM" and seed == 1 and site == "UCL":
        raise RuntimeError("diverged")
    return 0.8


@pytest.fixture(scope="module")
def study_dir(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rep")
    spec = spec_from_dict({"name": "r", "objective": "smoke", "max_retries": 0,
                           "grid": {"seed": [0, 1], "heldout": ["UCL", "BIDMC"], "modules": list(DICE)}})
    store = make_storage(str(tmp / "j.log"), "r")
    run_worker(spec, store, _objective, log=lambda s: None)
    return tmp


def test_report_files_provenance_and_bold(study_dir, tmp_path):
    prof = tmp_path / "eff.csv"
    prof.write_text("model,role,params,gflops,latency_ms,latency_min_ms,size_mb\n"
                    "enet,student,362992,2.11,77.3,43.6,1.64\nunet_wide,teacher,6495321,13.54,373.1,266.3,26.0\n")
    out = tmp_path / "out"
    assert main(["--storage", str(study_dir / "j.log"), "--study", "r", "--out", str(out),
                 "--efficiency", str(prof)]) == 0
    for name in ("tables.md", "tables.tex", "trials.csv", "provenance.json", "table_a_dice.csv",
                 "table_b_modules.csv", "table_c_efficiency.csv", "table_d_hd95.csv", "per_site_dice.png",
                 "dice_vs_gflops.png", "optimization_history.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "tables.md").read_text()
    for word in ("commit: abc1234", "data source: synthetic", "hardware: test CPU", "config hash:",
                 "report date:", "trial dates:"):
        assert word in md
    assert md.count("<sub>Provenance:") == 4  # every table carries it
    assert "| KM | **0.825 ± 0.007** | 0.725 ± 0.007 | 0.775 ± 0.071 |" in md  # best on UCL (S4)
    assert "| LM+KM | 0.805 ± 0.007 | **0.805 ± 0.007** | **0.805 ± 0.000** |" in md  # best on BIDMC, mean
    assert "| LM | 0.740 (n=1) |" in md  # LM on UCL: one seed failed, one left
    assert "| LM+KM | ✓ | ✓ |  |" in md and "diverged" in md  # check marks; failed trial listed
    tex = (out / "tables.tex").read_text()
    assert "\\textbf{0.825 $\\pm$ 0.007}" in tex and "\\checkmark" in tex and "% commit: abc1234" in tex
    with open(out / "table_a_dice.csv") as fh:
        lines = fh.read().splitlines()
    assert lines[0].startswith("# study: r") and any(line.startswith("# commit: abc1234") for line in lines)
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert {r["method"] for r in rows} == set(DICE) and {r["n_seeds"] for r in rows} <= {"1", "2"}


def test_trials_csv_round_trip(study_dir, tmp_path):
    out = tmp_path / "a"
    assert main(["--storage", str(study_dir / "j.log"), "--study", "r", "--out", str(out)]) == 0
    rows = read_trials_csv(out / "trials.csv")
    assert len(rows) == 16 and sum(r["state"] == "FAIL" for r in rows) == 1
    assert main(["--trials-csv", str(out / "trials.csv"), "--study", "r", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "tables.md").read_text().count("**") > 0


def test_stat_and_bold_direction():
    assert Stat.of([1.0, 3.0]) == Stat(2.0, math.sqrt(2.0), 2) and Stat.of([math.nan]).n == 0
    rows = [{"state": "COMPLETE", "student": "enet", "method": m, "heldout": "HK", "seed": 0,
             "config_hash": "x", "heldout_hd95": v} for m, v in (("none", 9.0), ("LM", 7.0))]
    t = dice_table(rows, "heldout_hd95", best="min")
    assert t.bold() == {(1, 1)}


def test_missing_study_is_an_error_without_secrets(tmp_path, capsys):
    args = ["--storage", f"sqlite:///{tmp_path}/x.db", "--study", "nope", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "error:" in capsys.readouterr().err
