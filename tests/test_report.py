"""Report: tables (Markdown, LaTeX, CSV) with provenance, paired statistics against no-KD and bold only
where significant, smoke-run labels, figures, trials.csv round trip."""

from __future__ import annotations

import csv
import math

import numpy as np
import pytest
from scipy import stats

from relkd_bench.ablate import make_storage, run_worker, spec_from_dict
from relkd_bench.report import Stat, dice_table, paired_cells, paired_table, read_trials_csv
from relkd_bench.report.__main__ import main
from relkd_bench.report.stats import Paired, bootstrap_interval, paired, wilcoxon_p

DICE = {"none": 0.70, "LM": 0.74, "KM": 0.72, "LM+KM": 0.80}


def _objective(trial, plan):
    seed, site = plan.params["seed"], plan.params["heldout"]
    bonus = 0.1 if site == "UCL" and plan.method == "KM" else 0.0  # KM wins on UCL, LM+KM on BIDMC
    trial.set_user_attr("method", plan.method)
    dice = DICE[plan.method] + bonus + 0.01 * seed
    cases = {f"{site}/Case{i:02d}": dice + 0.004 * ((3 * i + 2 * len(plan.method) + seed) % 4) - 0.006
             for i in range(3)}
    for k, v in {"seed": seed, "heldout": site, "student": "enet", "teacher": "unet_wide",
                 "heldout_dice": dice, "heldout_case_dice": cases,
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
    prof.write_text("# models: as preset 'quick' trains them (engine.build_role), input 96x96x1\n"
                    "model,role,params,gflops,latency_ms,latency_min_ms,size_mb\n"
                    "enet,student,362992,2.11,77.3,43.6,1.64\nunet_wide,teacher,6495321,13.54,373.1,266.3,26.0\n")
    out = tmp_path / "out"
    assert main(["--storage", str(study_dir / "j.log"), "--study", "r", "--out", str(out),
                 "--efficiency", str(prof)]) == 0
    for name in ("tables.md", "tables.tex", "trials.csv", "provenance.json", "table_a_dice.csv",
                 "table_b_modules.csv", "table_c_efficiency.csv", "table_d_hd95.csv", "per_site_dice.png",
                 "dice_vs_gflops.png", "optimization_history.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    md = (out / "tables.md").read_text()
    assert "models: as preset 'quick' trains them" in md  # how the efficiency table's models were built
    for word in ("commit: abc1234", "data source: synthetic", "hardware: test CPU", "config hash:",
                 "report date:", "trial dates:"):
        assert word in md
    assert md.count("<sub>Provenance:") == 5  # every table carries it
    # bold = significantly better than none (2 seeds x 3 cases, all differences > 0: p = 2/2^6)
    assert "| KM | **0.825 ± 0.007** | **0.725 ± 0.007** | 0.775 ± 0.071 |" in md
    assert "| LM | 0.740 (n=1) | **0.745 ± 0.007** |" in md  # LM on UCL: one seed failed, one left
    assert "| none | 0.705 ± 0.007 | 0.705 ± 0.007 | 0.705 ± 0.000 |" in md  # never bold by best mean
    assert "| LM+KM | ✓ | ✓ |  | **0.805 ± 0.007** |" in md and "diverged" in md  # check marks; failure
    assert "| LM | +0.040 [+0.040, +0.040], p = 0.250 (n=3, 1 seed) | **+0.040" in md  # (e): 1 seed: no bold
    assert "| 6.00 ± 0.00 |" in md and "**6.00" not in md  # (d): no paired test on HD95, no bold
    tex = (out / "tables.tex").read_text()
    assert "\\textbf{0.825 $\\pm$ 0.007}" in tex and "\\checkmark" in tex and "% commit: abc1234" in tex
    assert "p = 0.031" in tex and "tab:e_paired" in tex
    with open(out / "table_e_paired.csv") as fh:
        paired_rows = list(csv.DictReader(line for line in fh if not line.startswith("#")))
    km = next(r for r in paired_rows if (r["method"], r["heldout"]) == ("KM", "UCL"))
    assert float(km["dice_diff_vs_none"]) == pytest.approx(0.12) and float(km["wilcoxon_p"]) == 0.03125
    assert km["significant"] == "1" and km["n_pairs"] == "6" and km["n_seeds"] == "2"
    with open(out / "table_a_dice.csv") as fh:
        lines = fh.read().splitlines()
    assert lines[0].startswith("# study: r") and any(line.startswith("# commit: abc1234") for line in lines)
    rows = list(csv.DictReader(line for line in lines if not line.startswith("#")))
    assert {r["method"] for r in rows} == set(DICE) and {r["n_seeds"] for r in rows} <= {"1", "2"}
    assert {"dice_diff_vs_none", "diff_ci_low", "diff_ci_high", "wilcoxon_p", "significant"} <= set(rows[0])


def test_trials_csv_round_trip(study_dir, tmp_path):
    out = tmp_path / "a"
    assert main(["--storage", str(study_dir / "j.log"), "--study", "r", "--out", str(out)]) == 0
    rows = read_trials_csv(out / "trials.csv")
    assert len(rows) == 16 and sum(r["state"] == "FAIL" for r in rows) == 1
    assert paired_cells(rows)[("enet", "KM", "UCL")].n == 6  # per-case Dice survive the round trip
    assert main(["--trials-csv", str(out / "trials.csv"), "--study", "r", "--out", str(tmp_path / "b")]) == 0
    assert (tmp_path / "b" / "tables.md").read_text().count("**") > 0


def test_stat():
    assert Stat.of([1.0, 3.0]) == Stat(2.0, math.sqrt(2.0), 2) and Stat.of([math.nan]).n == 0


def test_bootstrap_interval_by_hand():
    # all pairs equal: every resample has the same mean
    assert bootstrap_interval([0.05] * 7) == pytest.approx((0.05, 0.05))
    # pairs {0, 1}: a resample's mean is 0, 0.5 or 1 with probabilities 1/4, 1/2, 1/4, so the 2.5 and
    # 97.5 percentiles of 10000 resamples are 0 and 1
    assert bootstrap_interval([0.0, 1.0]) == (0.0, 1.0)
    # the fixed seed: the same numbers on every call, and the draw is numpy's default_rng(0)
    d = [0.3, -0.1, 0.2, 0.05, 0.1]
    means = np.asarray(d)[np.random.default_rng(0).integers(0, 5, (10_000, 5))].mean(1)
    assert bootstrap_interval(d) == bootstrap_interval(d) == tuple(np.quantile(means, [0.025, 0.975]))


def test_wilcoxon_by_hand():
    # exact two-sided signed-rank p: all 5 differences positive -> W- = 0, P = 2 / 2^5
    assert wilcoxon_p([0.01, 0.02, 0.03, 0.04, 0.05]) == pytest.approx(2 / 32)
    # 6 differences, the smallest |d| negative -> W- = 1: P(W- <= 1) = 2 / 2^6, two-sided 4 / 64
    d = [-0.01, 0.02, 0.03, 0.04, 0.05, 0.06]
    assert wilcoxon_p(d) == pytest.approx(4 / 64) == stats.wilcoxon(d).pvalue
    assert math.isnan(wilcoxon_p([0.0, 0.0]))
    p = paired(d, seeds=2)
    assert p.diff == pytest.approx(0.19 / 6) and p.n == 6 and not p.significant  # p = 0.0625
    assert Paired(0.1, 0.05, 0.15, 0.03, 6, 2).significant
    assert not Paired(0.1, 0.05, 0.15, 0.03, 6, 1).significant  # one seed: case variation only
    assert not Paired(0.1, -0.01, 0.15, 0.03, 6, 2).significant


def _row(method, seed, cases, site="HK", student="enet", number=0):
    return {"state": "COMPLETE", "number": number, "student": student, "method": method, "heldout": site,
            "seed": seed, "config_hash": "x", "heldout_dice": float(np.mean(list(cases.values()) or [0.0])),
            "heldout_hd95": 5.0, "heldout_case_dice": cases}


def test_pairs_match_case_fold_and_seed():
    rows = [_row("none", 0, {"a": 0.5, "b": 0.6}), _row("none", 1, {"a": 0.7, "b": 0.2}),
            _row("AA", 0, {"a": 0.6, "b": 0.6, "c": 0.9}), _row("AA", 1, {"a": 0.9, "b": 0.1}),
            _row("AA", 2, {"a": 0.9}),  # no baseline of seed 2: left out
            _row("AA", 0, {"a": 0.0}, site="UCL")]  # no baseline on UCL
    got = paired_cells(rows)
    assert set(got) == {("enet", "AA", "HK")}
    c = got[("enet", "AA", "HK")]
    assert (c.n, c.seeds) == (4, 2) and c.diff == pytest.approx((0.1 + 0.0 + 0.2 - 0.1) / 4)
    assert c.p == pytest.approx(stats.wilcoxon([0.1, 0.2, -0.1]).pvalue)


def test_old_trials_without_case_dice_have_no_bold_and_say_so():
    rows = [{**_row(m, s, {}), "heldout_case_dice": None, "heldout_dice": v}
            for m, v in (("none", 0.5), ("LM", 0.9)) for s in (0, 1)]
    t = dice_table(rows)
    assert t.bold() == set() and "paired statistics unavailable" in t.note
    assert paired_table(rows).body == [] and "unavailable" in paired_table(rows).note


def test_one_seed_tables_are_titled_a_smoke_run():
    rows = [_row("none", 0, {"a": 0.5, "b": 0.4, "c": 0.3}), _row("LM", 0, {"a": 0.9, "b": 0.8, "c": 0.7})]
    for t in (dice_table(rows), paired_table(rows)):
        assert "SMOKE RUN" in t.title and "ranks nothing" in t.note and t.bold() == set()
    two = [*rows, _row("none", 1, {"a": 0.5}), _row("LM", 1, {"a": 0.6})]
    assert "SMOKE RUN" not in dice_table(two).title


def test_missing_study_is_an_error_without_secrets(tmp_path, capsys):
    args = ["--storage", f"sqlite:///{tmp_path}/x.db", "--study", "nope", "--out", str(tmp_path / "o")]
    assert main(args) == 2
    assert "error:" in capsys.readouterr().err


def test_per_site_figure_is_honest(monkeypatch, tmp_path):
    """Bars from 0, no error bar for one seed, per-case dots, the teacher as a reference mark."""
    from relkd_bench.report import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, prov: drawn.append(fig) or path)
    rows = [{**_row(m, 0, {"a": 0.5 + d, "b": 0.6 + d, "c": 0.7 + d}), "teacher_heldout_dice": 0.8}
            for m, d in (("none", 0.0), ("LM", 0.1))]
    figures.per_site_bars(rows, tmp_path / "f.png", "prov")
    ax = drawn[-1].axes[0]
    assert ax.get_ylim()[0] == 0.0 and "SMOKE RUN" in ax.get_title()
    assert not ax.containers[2:]  # two bar containers, no error-bar container: n = 1 seed
    assert sum(len(c.get_offsets()) for c in ax.collections if hasattr(c, "get_offsets")) >= 6  # case dots
    assert "teacher" in [h.get_label() for h in ax.get_legend_handles_labels()[0]]
    rows += [{**r, "seed": 1, "number": 5} for r in rows]
    figures.per_site_bars(rows, tmp_path / "g.png", "prov")
    assert len(drawn[-1].axes[0].containers) == 4  # two seeds: an error-bar container per method


def test_method_studies_pair_with_no_kd_and_any_reference():
    """A method study labels its baseline ``no-KD``; ``reference`` pairs against another method."""
    rows = [_row("no-KD", s, {"a": 0.5, "b": 0.6}) for s in (0, 1)]
    rows += [_row("RelKD", s, {"a": 0.6, "b": 0.7}) for s in (0, 1)]
    rows += [_row("tuned", s, {"a": 0.65, "b": 0.8}) for s in (0, 1)]
    assert set(paired_cells(rows)) == {("enet", "RelKD", "HK"), ("enet", "tuned", "HK")}
    vs = paired_cells(rows, reference="RelKD")
    assert set(vs) == {("enet", "no-KD", "HK"), ("enet", "tuned", "HK")}
    assert vs[("enet", "tuned", "HK")].diff == pytest.approx(0.075)
    t = paired_table(rows, "RelKD")
    assert t.key == "e_paired_vs_RelKD" and "minus RelKD" in t.title
    assert {r["reference"] for r in t.records} == {"RelKD"}


def test_paired_against_an_unknown_method_is_an_error(study_dir, tmp_path, capsys):
    assert main(["--storage", str(study_dir / "j.log"), "--study", "r", "--out", str(tmp_path / "r"),
                 "--paired-against", "FitNet"]) == 2
    assert "--paired-against 'FitNet'" in capsys.readouterr().err
    assert main(["--storage", str(study_dir / "j.log"), "--study", "r", "--out", str(tmp_path / "r"),
                 "--paired-against", "LM"]) == 0
    assert (tmp_path / "r" / "table_e_paired_vs_LM.csv").is_file()


def test_a_shared_teacher_is_one_row_counted_once_per_fold():
    """A students study runs the fold's one teacher once per student and seed: one row, n = 1 per site."""
    rows = [_row(m, seed, {"a": 0.6 + 0.1 * seed}, student=s) for s in ("enet", "erfnet") for seed in (0, 1)
            for m in ("no-KD", "RelKD")]
    shared = {"teacher": "unet_wide", "checkpoint": "t/best.pt"}
    rows += [{**_row("teacher", seed, {"a": 0.8}, student=s), **shared}
             for s in ("enet", "erfnet") for seed in (0, 1)]
    t = dice_table(rows)
    labels = [row[0] for row in t.body]
    assert labels == ["enet · no-KD", "enet · RelKD", "erfnet · no-KD", "erfnet · RelKD",
                      "unet_wide · teacher"]
    assert t.body[-1][1].n == 1 and t.body[-1][1].mean == pytest.approx(0.8)
    single = [r for r in rows if r["student"] == "enet"]
    assert [row[0] for row in dice_table(single).body] == ["no-KD", "RelKD", "teacher"]


def test_dice_vs_gflops_draws_teacher_trials_as_the_teacher(monkeypatch, tmp_path):
    """A teacher trial of a students study scores the teacher: it is drawn at the teacher's GFLOPs, never as
    a point at a student's; the profile's ``#`` line is skipped."""
    from relkd_bench.report import figures

    drawn = []
    monkeypatch.setattr(figures, "_save", lambda fig, path, prov: drawn.append(fig) or path)
    prof = tmp_path / "eff.csv"
    prof.write_text("# models: as preset 'real' trains them\n"
                    "model,role,params,gflops,latency_ms,latency_min_ms,size_mb\n"
                    "enet,student,1,0.13,7,7,1\nunet_wide,teacher,1,0.5,3,3,1\n")
    rows = [{**_row(m, 0, {"a": 0.6}), "teacher": "unet_wide", "teacher_heldout_dice": 0.8}
            for m in ("no-KD", "RelKD", "teacher")]
    figures.dice_vs_gflops(rows, prof, tmp_path / "f.png", "prov")
    labels = [h.get_label() for h in drawn[-1].axes[0].get_legend_handles_labels()[0]]
    assert labels == ["student enet · no-KD", "student enet · RelKD", "teacher unet_wide"]
