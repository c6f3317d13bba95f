"""PNG figures: per-site bars, Dice vs GFLOPs, Optuna importances and optimization history."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402

from relkd_bench.ablate.spec import TEACHER  # noqa: E402
from relkd_bench.report.stats import case_scores  # noqa: E402
from relkd_bench.report.tables import Stat, dice_table, read_profile_csv  # noqa: E402

__all__ = ["dice_vs_gflops", "optuna_figures", "per_site_bars"]


def _save(fig: Any, path: Path, prov: str) -> Path:
    fig.text(0.01, -0.02, prov, fontsize=5, color="0.4", ha="left", va="top", wrap=True)
    fig.savefig(path, dpi=150, bbox_inches="tight")
    plt.close(fig)
    return path


#: Draw every case as a dot when a bar has at most this many (cases × seeds) scores.
FEW_CASES = 40


def _case_points(done: Sequence[dict], student: str, method: str, site: str) -> list[float]:
    vals: list[float] = []
    for r in done:
        if (str(r["student"]), str(r["method"]), str(r["heldout"])) == (student, method, site):
            vals += [v for v in (case_scores(r) or {}).values()]
    return vals


def _teacher_means(done: Sequence[dict]) -> dict[str, float]:
    """Mean teacher held-out Dice per site, each (site, seed) teacher counted once."""
    seen: dict[tuple[str, str], float] = {}
    for r in done:
        v = r.get("teacher_heldout_dice")
        if isinstance(v, float) and math.isfinite(v):
            seen.setdefault((str(r["heldout"]), str(r.get("seed"))), v)
    sites: dict[str, list[float]] = {}
    for (site, _), v in seen.items():
        sites.setdefault(site, []).append(v)
    return {site: sum(v) / len(v) for site, v in sites.items()}


def per_site_bars(rows: Sequence[dict[str, Any]], path: Path, prov: str) -> Path | None:
    """Held-out Dice per site and method: bars from 0 at the mean over seeds, an error bar (std over
    seeds) only where there are ≥ 2 seeds, every case as a dot where there are few, and the teacher's
    held-out Dice as a dashed reference mark."""
    t = dice_table(rows)
    if not t.body:
        return None
    done = [r for r in rows if r["state"] == "COMPLETE"]
    keys = list(dict.fromkeys((r["student"], r["method"]) for r in t.records))  # one per body row
    sites = [h for h in t.header[1:] if h != "mean over sites"]
    fig, ax = plt.subplots(figsize=(max(5.0, 1.2 * len(sites) * max(1, len(t.body)) / 3), 3.6))
    width = 0.8 / len(t.body)
    for i, (row, key) in enumerate(zip(t.body, keys)):
        stats: list[Stat] = row[1:1 + len(sites)]
        xs = [j + (i - (len(t.body) - 1) / 2) * width for j in range(len(sites))]
        ax.bar(xs, [s.mean if s.n else 0.0 for s in stats], width, label=row[0], alpha=0.8)
        spread = [(x, s) for x, s in zip(xs, stats) if s.n >= 2]
        if spread:
            ax.errorbar([x for x, _ in spread], [s.mean for _, s in spread], yerr=[s.std for _, s in spread],
                        fmt="none", ecolor="0.2", capsize=2, lw=0.8)
        for x, site in zip(xs, sites):
            pts = _case_points(done, key[0], key[1], site)
            if 0 < len(pts) <= FEW_CASES:
                jitter = [x + width * 0.3 * ((k % 5) / 4 - 0.5) for k in range(len(pts))]
                ax.scatter(jitter, pts, s=5, color="0.15", zorder=3, linewidths=0)
    teacher = _teacher_means(done)
    for j, site in enumerate(sites):
        if site in teacher:
            ax.hlines(teacher[site], j - 0.45, j + 0.45, colors="k", linestyles="--", lw=1,
                      label="teacher" if j == min(k for k, s in enumerate(sites) if s in teacher) else None)
    ax.set_xticks(range(len(sites)), sites)
    ax.set_ylabel("held-out Dice")
    ax.set_ylim(0.0, 1.0)
    smoke = " — SMOKE RUN (one seed)" if "SMOKE RUN" in t.title else ""
    ax.set_title(f"Held-out Dice per site{smoke}\nbars: mean over seeds; error bars: std (≥ 2 seeds only); "
                 "dots: cases", fontsize=8)
    ax.legend(fontsize=6, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return _save(fig, path, prov)


def dice_vs_gflops(rows: Sequence[dict[str, Any]], profile_csv: Path, path: Path, prov: str) -> Path | None:
    """Held-out Dice against GFLOPs: students (each method) and the teachers they learnt from; error bars
    (std over seeds) only where there are ≥ 2 seeds."""
    if not profile_csv.is_file():
        return None
    gflops = {r["model"]: float(r["gflops"]) for r in read_profile_csv(profile_csv)[0]}
    done = [r for r in rows if r["state"] == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(5.5, 3.8))
    plotted = False
    students = [r for r in done if r["method"] != TEACHER]  # a teacher trial scores the teacher, drawn below
    for (name, method), st in _means(students, "student", "heldout_dice").items():
        if name in gflops and st.n:
            ax.errorbar(gflops[name], st.mean, yerr=st.std if st.n >= 2 else None, fmt="o", capsize=2,
                        label=f"student {name} · {method}")
            plotted = True
    for (name, _), st in _means(done, "teacher", "teacher_heldout_dice", one_per_model=True).items():
        if name in gflops and st.n:
            ax.errorbar(gflops[name], st.mean, yerr=st.std if st.n >= 2 else None, fmt="s", capsize=2,
                        label=f"teacher {name}")
            plotted = True
    if not plotted:
        plt.close(fig)
        return None
    ax.set_xscale("log")
    ax.set_xlabel("GFLOPs per forward pass (profile input size)")
    ax.set_ylabel("held-out Dice")
    ax.set_title("Dice vs compute: teachers and students")
    ax.legend(fontsize=6)
    return _save(fig, path, prov)


def _means(done: Sequence[dict], model_key: str, metric: str, one_per_model: bool = False) -> dict:
    groups: dict[tuple[str, str], list[float]] = {}
    seen: set[tuple[str, str]] = set()
    for r in done:
        v = r.get(metric)
        if r.get(model_key) in (None, "") or not isinstance(v, float) or math.isnan(v):
            continue
        key = (str(r[model_key]), "" if one_per_model else str(r["method"]))
        dedup = (key[0], str(r.get("seed")) + str(r.get("heldout")))
        if one_per_model and dedup in seen:  # one teacher per (seed, site): count it once
            continue
        seen.add(dedup)
        groups.setdefault(key, []).append(v)
    return {k: Stat.of(v) for k, v in groups.items()}


def optuna_figures(study: optuna.Study, out: Path, prov: str) -> tuple[list[Path], list[str]]:
    """Parameter importances and optimization history (``optuna.visualization.matplotlib``)."""
    from optuna.visualization import matplotlib as ovm

    paths, notes = [], []
    for name, draw in (("param_importances.png", ovm.plot_param_importances),
                       ("optimization_history.png", ovm.plot_optimization_history)):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                ax = draw(study)
            paths.append(_save(ax.figure, out / name, prov))
        except Exception as exc:  # e.g. importances need ≥ 2 complete trials and a varying parameter
            notes.append(f"{name} not drawn: {type(exc).__name__}: {exc}")
            plt.close("all")
    return paths, notes
