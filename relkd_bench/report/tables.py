"""Paper-style tables from trial rows: Markdown, LaTeX and tidy CSV.

(a) method × held-out site Dice, mean ± std over seeds; (b) the module ablation with LM / KM / AA check
marks; (c) efficiency from the profile CSV; (d) HD95 (lower is better); (e) each method against the
no-KD student of the same fold and seed (paired difference, bootstrap interval, Wilcoxon p; see
:mod:`relkd_bench.report.stats`).

Bold marks only what is significant: in (a), (b) and (e) a method's cell is bold when its paired
difference from no-KD is significant (:attr:`Paired.significant`; in (a)/(b) only when positive). Nothing
is bold where paired statistics are unavailable, in (d), or by "best mean" alone. (c) bolds the
smallest model figures, which are measurements, not comparisons under noise. A table whose cells all
come from one seed is titled a smoke run.
"""

from __future__ import annotations

import csv
import math
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relkd_bench.ablate.spec import METHODS, MODULE_SETS, TEACHER
from relkd_bench.report.collect import class_columns
from relkd_bench.report.stats import ALPHA, BOOTSTRAP_SEED, N_BOOTSTRAP, Paired, paired_cells

__all__ = ["SITE_ORDER", "Stat", "Table", "class_tables", "dice_table", "efficiency_table", "modules_table",
           "paired_table"]

SITE_ORDER = ("RUNMC", "BMC", "I2CVB", "UCL", "BIDMC", "HK")  # S1…S6 (DESIGN §4)
#: Row order: the no-KD student, module sets, the named methods of a method study, the teacher last.
METHOD_ORDER = (*MODULE_SETS, *(m for m in METHODS if m != TEACHER), TEACHER)


@dataclass(frozen=True)
class Stat:
    """Mean ± sample std over ``n`` values (std 0 when n = 1)."""

    mean: float
    std: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        vals = [v for v in values if isinstance(v, (int, float)) and math.isfinite(v)]
        if not vals:
            return cls(math.nan, math.nan, 0)
        return cls(statistics.fmean(vals), statistics.stdev(vals) if len(vals) > 1 else 0.0, len(vals))

    def text(self, digits: int) -> str:
        if self.n == 0:
            return "–"
        if self.n == 1:  # one seed: no spread to report
            return f"{self.mean:.{digits}f} (n=1)"
        return f"{self.mean:.{digits}f} ± {self.std:.{digits}f}"


@dataclass
class Table:
    """A rendered-ready table: header, body (str, number, :class:`Stat` or :class:`Paired` cells) and
    what is bold: the cells in ``marked`` when given, else the best of each column by ``best``."""

    key: str
    title: str
    header: list[str]
    body: list[list[Any]]
    best: str = "max"  # "max" | "min" | "" (no bold)
    digits: int = 3
    note: str = ""
    records: list[dict[str, Any]] = field(default_factory=list)  # tidy rows for the CSV
    marked: frozenset[tuple[int, int]] | None = None

    def bold(self) -> set[tuple[int, int]]:
        """(row, col) of the ``marked`` cells, else of the best Stat (or number) of each column (ties
        all bold)."""
        if self.marked is not None:
            return set(self.marked)
        out: set[tuple[int, int]] = set()
        if not self.best:
            return out
        for j in range(len(self.header)):
            vals = {i: _value(r[j]) for i, r in enumerate(self.body)}
            vals = {i: v for i, v in vals.items() if v is not None and math.isfinite(v)}
            if len(vals) > 1:
                target = (max if self.best == "max" else min)(vals.values())
                out |= {(i, j) for i, v in vals.items() if v == target}
        return out

    def markdown(self, prov: str) -> str:
        bold = self.bold()
        lines = [f"### {self.title}", "", "| " + " | ".join(self.header) + " |",
                 "|" + "|".join("---" if j == 0 else "---:" for j in range(len(self.header))) + "|"]
        for i, row in enumerate(self.body):
            cells = [_text(c, self.digits) for c in row]
            cells = [f"**{c}**" if (i, j) in bold else c for j, c in enumerate(cells)]
            lines.append("| " + " | ".join(cells) + " |")
        if self.note:
            lines += ["", self.note]
        return "\n".join([*lines, "", f"<sub>Provenance: {prov}</sub>", ""])

    def latex(self, prov: str) -> str:
        bold = self.bold()
        spec = "l" + "r" * (len(self.header) - 1)
        lines = ["\\begin{table}[t]", "\\centering", f"\\caption{{{_tex(self.title)}. "
                 f"\\footnotesize Provenance: {_tex(prov)}}}", f"\\label{{tab:{self.key}}}",
                 f"\\begin{{tabular}}{{{spec}}}", "\\toprule",
                 " & ".join(_tex(h) for h in self.header) + " \\\\", "\\midrule"]
        for i, row in enumerate(self.body):
            cells = [_tex(_text(c, self.digits)) for c in row]
            cells = [f"\\textbf{{{c}}}" if (i, j) in bold else c for j, c in enumerate(cells)]
            lines.append(" & ".join(cells) + " \\\\")
        return "\n".join([*lines, "\\bottomrule", "\\end{tabular}", "\\end{table}", ""])

    def write_csv(self, path: Path, prov_lines: Sequence[str]) -> Path:
        records = self.records or [dict(zip(self.header, (_text(c, 6) for c in row))) for row in self.body]
        with open(path, "w", newline="") as fh:
            for line in prov_lines:
                fh.write(f"# {line}\n")
            w = csv.DictWriter(fh, fieldnames=list(records[0]) if records else ["empty"])
            w.writeheader()
            w.writerows(records)
        return path


def _value(c: Any) -> float | None:
    if isinstance(c, Stat):
        return c.mean if c.n else None
    if isinstance(c, Paired):
        return c.diff if c.n else None
    return float(c) if isinstance(c, (int, float)) and not isinstance(c, bool) else None


def _text(c: Any, digits: int) -> str:
    if isinstance(c, (Stat, Paired)):
        return c.text(digits)
    if isinstance(c, float):
        return f"{c:.{digits}f}"
    return str(c)


def _tex(s: str) -> str:
    for a, b in (("\\", "\\textbackslash{}"), ("&", "\\&"), ("%", "\\%"), ("#", "\\#"), ("_", "\\_"),
                 ("…", "\\ldots{}"), ("×", "$\\times$"), ("±", "$\\pm$"), ("✓", "\\checkmark{}"),
                 ("·", "$\\cdot$"), ("–", "--"), ("<", "$<$"), ("−", "$-$")):
        s = s.replace(a, b)
    return s


def _order(values: set[str], order: Sequence[str]) -> list[str]:
    return [v for v in order if v in values] + sorted(values - set(order))


def _row_key(r: dict[str, Any]) -> tuple[str, str]:
    """(model, method): a student trial's student, a teacher trial's teacher model."""
    model = (r.get("teacher") or r["student"]) if r["method"] == TEACHER else r["student"]
    return str(model), str(r["method"])


def _distinct_teachers(trials: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """A teacher is trained once per fold and shared by the seeds and students of that fold: each of its
    trials repeats one measurement, so it counts once (per checkpoint), not once per student run."""
    seen: dict[str, dict[str, Any]] = {}
    for r in trials:
        seen.setdefault(str(r.get("checkpoint") or r["number"]), r)
    return list(seen.values())


def _groups(rows: Sequence[dict[str, Any]], metric: str) -> tuple[list[tuple[str, str]], list[str], dict]:
    done = [r for r in rows if r["state"] == "COMPLETE"]
    students = _order({str(r["student"]) for r in done if r["method"] != TEACHER}, ())
    teachers = _order({_row_key(r)[0] for r in done if r["method"] == TEACHER}, ())
    methods = _order({str(r["method"]) for r in done}, METHOD_ORDER)
    present = {_row_key(r) for r in done}
    keys = [(s, m) for s in students for m in methods if (s, m) in present and m != TEACHER]
    keys += [(t, TEACHER) for t in teachers]
    sites = _order({str(r["heldout"]) for r in done}, SITE_ORDER)
    cells: dict[tuple[tuple[str, str], str], list[dict]] = defaultdict(list)
    for r in done:
        cells[(_row_key(r), str(r["heldout"]))].append(r)
    cells = {k: (_distinct_teachers(v) if k[0][1] == TEACHER else v) for k, v in cells.items()}
    return keys, sites, {k: (Stat.of([r[metric] for r in v]), v) for k, v in cells.items()}


def _label(key: tuple[str, str], multi: bool) -> str:
    return f"{key[0]} · {key[1]}" if multi else key[1]


SMOKE_TITLE = " — SMOKE RUN: one seed per cell, not a ranking"
SMOKE_NOTE = ("Smoke run: every cell is a single training run (one seed). A single run moves by more than "
              "the differences between methods (floating-point differences between two CPUs alone moved one "
              "cell by 0.36 Dice), so this table shows that the pipeline works and ranks nothing; compare "
              "methods with several seeds (ablations/modules.yaml).")
PAIRED_RULE = (f"paired Wilcoxon p < {ALPHA} and 95 % bootstrap interval excluding 0, over held-out cases × "
               "seeds against the no-KD student of the same fold and seed, with ≥ 2 seeds")


def _is_smoke(stats: Sequence[Stat]) -> bool:
    return any(s.n for s in stats) and all(s.n <= 1 for s in stats)


def _paired_record(pc: Paired | None) -> dict[str, Any]:
    if pc is None:
        return {"dice_diff_vs_none": "", "diff_ci_low": "", "diff_ci_high": "", "wilcoxon_p": "",
                "n_pairs": 0, "significant": ""}
    return {"dice_diff_vs_none": pc.diff, "diff_ci_low": pc.low, "diff_ci_high": pc.high,
            "wilcoxon_p": pc.p, "n_pairs": pc.n, "significant": int(pc.significant)}


def _bold_note(metric: str, pairs: dict) -> str:
    if metric != "heldout_dice":
        return "no cell is bold: the paired tests cover Dice only"
    if not pairs:
        return ("paired statistics unavailable (the trials do not record per-case held-out Dice, "
                "heldout_case_dice, or have no no-KD trial of the same fold and seed): no cell is bold")
    return f"bold = significantly better than no-KD ({PAIRED_RULE}; table (e))"


def dice_table(rows: Sequence[dict[str, Any]], metric: str = "heldout_dice", key: str = "a_dice",
               title: str = "(a) Held-out site Dice, mean ± std over seeds", digits: int = 3) -> Table:
    """Method × held-out site table of ``metric`` (a column "mean" averages the sites' means); for Dice,
    the CSV carries each cell's paired comparison with no-KD and significant gains are bold."""
    keys, sites, cells = _groups(rows, metric)
    pairs = paired_cells(rows) if metric == "heldout_dice" else {}
    multi = len({k[0] for k in keys if k[1] != TEACHER}) > 1
    header = ["method", *sites] + (["mean over sites"] if len(sites) > 1 else [])
    body, records, marked, every = [], [], set(), []
    for i, k in enumerate(keys):
        stats = [cells.get((k, s), (Stat.of([]), []))[0] for s in sites]
        every += stats
        row: list[Any] = [_label(k, multi), *stats]
        if len(sites) > 1:
            row.append(Stat.of([s.mean for s in stats if s.n]))
        body.append(row)
        for j, (s, st) in enumerate(zip(sites, stats)):
            trials = cells.get((k, s), (None, []))[1]
            pc = pairs.get((k[0], k[1], s))
            if pc is not None and pc.significant and pc.diff > 0:
                marked.add((i, 1 + j))
            records.append({"student": k[0], "method": k[1], "heldout": s, f"{metric}_mean": st.mean,
                            f"{metric}_std": st.std, "n_seeds": st.n,
                            "seeds": " ".join(str(r["seed"]) for r in trials),
                            **(_paired_record(pc) if metric == "heldout_dice" else {}),
                            "config_hashes": " ".join(str(r["config_hash"]) for r in trials)})
    smoke = _is_smoke(every)
    note = (f"n = seeds per cell; {_bold_note(metric, pairs)}"
            + ("; mean over sites = mean ± std of the site means." if len(sites) > 1 else "."))
    return Table(key, title + (SMOKE_TITLE if smoke else ""), header, body, "", digits, records=records,
                 note=note + (" " + SMOKE_NOTE if smoke else ""), marked=frozenset(marked))


def class_tables(rows: Sequence[dict[str, Any]]) -> list[Table]:
    """Tasks with more than 2 classes: one method × held-out site table of Dice per foreground class
    (``heldout_dice_c<c>``; the headline table (a) is their mean). Binary studies: none."""
    classes = [k for k in class_columns(rows) if k.startswith("heldout_dice_c")]
    return [dice_table(rows, k, f"a{k.rsplit('_c', 1)[1]}_dice",
                       f"(a{k.rsplit('_c', 1)[1]}) Held-out Dice of class {k.rsplit('_c', 1)[1]}, "
                       "mean ± std over seeds") for k in classes]


def modules_table(rows: Sequence[dict[str, Any]]) -> Table:
    """The module ablation: LM / KM / AA check marks and held-out Dice per site."""
    t = dice_table(rows, key="b_modules", title="(b) Module ablation: held-out Dice, mean ± std over seeds")
    for row in t.body:
        method = row[0].split(" · ")[-1]
        row[1:1] = ["✓" if m in method.split("+") else "" for m in ("LM", "KM", "AA")]
    t.header[1:1] = ["LM", "KM", "AA"]
    t.marked = frozenset((i, j + 3) for i, j in t.marked or ())
    for r in t.records:
        r.update({m: int(m in r["method"].split("+")) for m in ("LM", "KM", "AA")})
    t.note = "LM: logits KD; KM: kernel (Gram) matrix module; AA: adaptive affinity module. " + t.note
    return t


def paired_table(rows: Sequence[dict[str, Any]], reference: str | None = None) -> Table:
    """(e) Each method minus the no-KD student (or the ``reference`` method) of the same fold and seed,
    per held-out site."""
    pairs = paired_cells(rows, reference)
    ref = "no-KD" if reference is None else reference
    title = (f"(e) Held-out Dice minus {ref} (same fold and seed): mean [95 % bootstrap interval], "
             "Wilcoxon p")
    keys, sites, _ = _groups(rows, "heldout_dice")
    keys = [k for k in keys if any((k[0], k[1], s) in pairs for s in sites)]
    multi = len({k[0] for k in keys}) > 1
    body = [[_label(k, multi), *[pairs.get((k[0], k[1], s), "–") for s in sites]] for k in keys]
    marked = {(i, j) for i, row in enumerate(body) for j, c in enumerate(row)
              if isinstance(c, Paired) and c.significant}
    records = [{"student": k[0], "method": k[1], "heldout": s, "reference": ref,
                **_paired_record(pairs.get((k[0], k[1], s))),
                "n_seeds": pairs[(k[0], k[1], s)].seeds if (k[0], k[1], s) in pairs else 0}
               for k in keys for s in sites]
    if not pairs:
        note = ("Paired statistics unavailable: no trial records per-case held-out Dice (heldout_case_dice) "
                f"next to a {ref} trial of the same fold and seed (as in studies run before the attribute "
                "existed).")
    else:
        note = (f"n = pairs (held-out cases × seeds). Interval: {N_BOOTSTRAP} bootstrap resamples of the "
                f"pairs (numpy default_rng({BOOTSTRAP_SEED})), percentiles 2.5 / 97.5; p: two-sided Wilcoxon "
                "signed-rank (scipy.stats.wilcoxon, zero differences dropped). Bold = significant: "
                f"{PAIRED_RULE.replace('no-KD student', f'{ref} trial')}. Not corrected for the number of "
                "methods; a case's pairs from different seeds are resampled as if independent, so intervals "
                "are optimistic when seeds disagree.")
        if all(p.seeds <= 1 for p in pairs.values()):
            title += SMOKE_TITLE
            note += " " + SMOKE_NOTE
    key = "e_paired" if reference is None else f"e_paired_vs_{_file_safe(reference)}"
    return Table(key, title, ["method", *sites], body, "", 3, note=note, records=records,
                 marked=frozenset(marked))


def _file_safe(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name)


def read_profile_csv(profile_csv: Path) -> tuple[list[dict[str, str]], str | None]:
    """The rows of an ``efficiency.csv`` written by ``python -m relkd_bench.profile`` and how its models were
    built (its ``# models:`` line; None when the file has none)."""
    with open(profile_csv, newline="") as fh:
        lines = fh.read().splitlines()
    built = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("# models:")), None)
    return list(csv.DictReader(line for line in lines if not line.startswith("#"))), built


def efficiency_table(profile_csv: Path, used: set[str]) -> Table:
    """(c) Efficiency from ``results/efficiency.csv`` (``python -m relkd_bench.profile``)."""
    header = ["model", "role", "params (M)", "GFLOPs", "CPU latency (ms)", "checkpoint (MB)"]
    if not profile_csv.is_file():
        return Table("c_efficiency", "(c) Efficiency", header, [], "", note=f"{profile_csv} not found: run "
                     "`python -m relkd_bench.profile` to write it.")
    prof, built = read_profile_csv(profile_csv)
    built = built or "the registry's default widths (the profile does not say how its models were built)"
    body = [[r["model"] + (" (this study)" if r["model"] in used else ""), r["role"],
             float(r["params"]) / 1e6, float(r["gflops"]), float(r["latency_ms"]), float(r["size_mb"])]
            for r in prof]
    return Table("c_efficiency", "(c) Efficiency at the profile's input size", header, body, "min", 2,
                 note=f"From {profile_csv} (python -m relkd_bench.profile; one forward pass, batch 1; "
                      f"models: {built}); bold = smallest. A study's models match these rows only when the "
                      "profile was built as its preset trains them (--preset). Latency is noisy on a shared "
                      "CPU.", records=[dict(r) for r in prof])
