"""Paired statistics: each method against a reference method (by default the no-KD student, ``none``)
of the same fold and seed.

A pair is one held-out case scored by a method's trial and by the reference trial of the same student,
held-out site and seed (per-case Dice from the trial attribute ``heldout_case_dice``). Over all pairs of
a (student, method, site) cell, i.e. held-out cases × seeds:

* the mean difference ``Dice(method) − Dice(reference)``;
* a 95 % percentile bootstrap interval of that mean: :data:`N_BOOTSTRAP` resamples of the pairs with
  replacement, drawn by ``numpy.random.default_rng(BOOTSTRAP_SEED)`` (fixed: the report is reproducible);
* the two-sided Wilcoxon signed-rank p-value (``scipy.stats.wilcoxon``; zero differences dropped).

A difference is *significant* when p < :data:`ALPHA`, the interval excludes 0 and at least two seeds
enter it: with one seed the pairs vary only over cases, and a single training run can move by more than
any case-level interval (floating-point differences between CPUs alone moved one cell by 0.36 Dice).
The pairs of one case across seeds are not independent; the resampling treats them as if they were, so
the interval is optimistic when seeds disagree. No correction for the several methods compared.
"""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import stats as _scipy_stats

__all__ = ["ALPHA", "BASELINES", "BOOTSTRAP_SEED", "N_BOOTSTRAP", "Paired", "bootstrap_interval",
           "case_scores", "is_reference", "paired", "paired_cells", "wilcoxon_p"]

ALPHA = 0.05
BOOTSTRAP_SEED = 0
N_BOOTSTRAP = 10_000
#: The labels of the no-KD student: ``none`` in module studies, ``no-KD`` in method studies.
BASELINES = ("none", "no-KD")


@dataclass(frozen=True)
class Paired:
    """``diff`` = mean paired difference, [``low``, ``high``] its 95 % bootstrap interval, ``p`` the
    Wilcoxon p-value (nan when undefined), ``n`` pairs from ``seeds`` seeds."""

    diff: float
    low: float
    high: float
    p: float
    n: int
    seeds: int

    @property
    def significant(self) -> bool:
        return self.seeds >= 2 and self.p < ALPHA and (self.low > 0 or self.high < 0)

    def text(self, digits: int = 3) -> str:
        if self.n == 0:
            return "–"
        p = "p = –" if math.isnan(self.p) else (f"p = {self.p:.3f}" if self.p >= 0.001 else "p < 0.001")
        return (f"{self.diff:+.{digits}f} [{self.low:+.{digits}f}, {self.high:+.{digits}f}], {p} "
                f"(n={self.n}, {self.seeds} seed{'s' if self.seeds != 1 else ''})")


def bootstrap_interval(diffs: Sequence[float], n_boot: int = N_BOOTSTRAP, seed: int = BOOTSTRAP_SEED,
                       level: float = 0.95) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of ``diffs`` (resampling the pairs with replacement)."""
    d = np.asarray(diffs, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(n_boot, len(d)))].mean(axis=1)
    tail = (1.0 - level) / 2
    low, high = np.quantile(means, [tail, 1.0 - tail])
    return float(low), float(high)


def wilcoxon_p(diffs: Sequence[float]) -> float:
    """Two-sided Wilcoxon signed-rank p-value of ``diffs``; nan when every difference is 0."""
    d = np.asarray(diffs, dtype=np.float64)
    if not np.any(d != 0):
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # small-sample and ties notes
        return float(_scipy_stats.wilcoxon(d).pvalue)


def paired(diffs: Sequence[float], seeds: int) -> Paired:
    """The :class:`Paired` summary of one cell's differences."""
    if not len(diffs):
        return Paired(math.nan, math.nan, math.nan, math.nan, 0, seeds)
    low, high = bootstrap_interval(diffs)
    return Paired(float(np.mean(diffs)), low, high, wilcoxon_p(diffs), len(diffs), seeds)


def case_scores(row: Mapping[str, Any]) -> dict[str, float] | None:
    """A trial's per-case held-out Dice ``{case uid: dice}`` (finite values only), or ``None`` when the
    trial did not record it."""
    cases = row.get("heldout_case_dice")
    if not isinstance(cases, Mapping):
        return None
    return {str(k): float(v) for k, v in cases.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)}


def is_reference(method: Any, reference: str | None = None) -> bool:
    """Whether a trial's method label is ``reference`` (``None``: the no-KD student, :data:`BASELINES`)."""
    return str(method) in (BASELINES if reference is None else (reference,))


def paired_cells(rows: Sequence[Mapping[str, Any]], reference: str | None = None,
                 ) -> dict[tuple[str, str, str], Paired]:
    """``{(student, method, site): Paired}`` for every method other than ``reference`` (``None``: the
    no-KD student) that has at least one pair with a reference trial; empty when no trial records
    per-case Dice."""
    done = [r for r in rows if r.get("state") == "COMPLETE" and case_scores(r) is not None]
    base: dict[tuple[str, str, str], dict[str, float]] = {}
    for r in sorted(done, key=lambda r: r.get("number") or 0):  # the first reference of a fold and seed
        if is_reference(r.get("method"), reference):
            base.setdefault((str(r["student"]), str(r["heldout"]), str(r["seed"])), case_scores(r))
    diffs: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    seeds: dict[tuple[str, str, str], set[str]] = defaultdict(set)
    for r in done:
        ref = base.get((str(r["student"]), str(r["heldout"]), str(r["seed"])))
        if is_reference(r.get("method"), reference) or ref is None:
            continue
        key = (str(r["student"]), str(r["method"]), str(r["heldout"]))
        mine = case_scores(r)
        pairs = [mine[c] - ref[c] for c in sorted(mine.keys() & ref.keys())]
        if pairs:
            diffs[key].extend(pairs)
            seeds[key].add(str(r["seed"]))
    return {k: paired(v, len(seeds[k])) for k, v in diffs.items()}
