"""Trial rows and provenance: from an Optuna study, or from a ``trials.csv`` the report wrote earlier."""

from __future__ import annotations

import csv
import datetime as _dt
import json
import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import optuna

from relkd_bench.ablate.worker import repeat_of

__all__ = ["CLASS_COLUMN", "COLUMNS", "class_columns", "provenance", "read_trials_csv", "rows_from_study",
           "write_trials_csv"]

#: Columns of ``trials.csv`` (one row per trial, every state).
COLUMNS = ("number", "state", "value", "method", "student", "teacher", "seed", "heldout", "heldout_dice",
           "heldout_hd95", "heldout_assd", "teacher_heldout_dice", "teacher_heldout_hd95", "best_epoch",
           "epochs_run", "seconds", "config_hash", "commit", "data_source", "backend", "device", "hardware",
           "datetime_complete", "worker", "cell", "error", "params", "heldout_case_dice", "checkpoint",
           "duplicate_of")
#: The row state of a finished trial whose parameters repeat an earlier finished trial's (a search that
#: sampled one configuration again: the engine reused that run). Left out of every table and count of
#: runs, so one training run is never counted as several seeds.
DUPLICATE = "DUPLICATE"
_NUM = {"value", "heldout_dice", "heldout_hd95", "heldout_assd", "teacher_heldout_dice",
        "teacher_heldout_hd95", "seconds"}
_INT = {"number", "seed", "best_epoch", "epochs_run", "duplicate_of"}
_JSON = {"heldout_case_dice"}  # stored as JSON text in trials.csv
#: Per-class held-out metrics of tasks with more than 2 classes (``heldout_dice_c1``, …): extra columns.
CLASS_COLUMN = re.compile(r"^heldout_(dice|hd95|assd)_c\d+$")


def class_columns(rows: Iterable[dict[str, Any]]) -> list[str]:
    """The per-class columns present in ``rows``, sorted by metric then class."""
    found = {k for r in rows for k in r if CLASS_COLUMN.match(k)}
    return sorted(found, key=lambda k: (k.rsplit("_c", 1)[0], int(k.rsplit("_c", 1)[1])))


def _num(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return math.nan
    return v


def _case_dice(ua: dict[str, Any]) -> dict[str, Any] | None:
    """Per-case held-out Dice ``{case uid: dice}``. Trials written before ``heldout_case_dice`` existed
    have only the list ``heldout_per_case_dice``, in the held-out dataset's order (the same for every trial
    of one fold and data config): its cases are keyed by position, ``#0``, ``#1``, …"""
    cases = ua.get("heldout_case_dice")
    if isinstance(cases, dict):
        return cases
    legacy = ua.get("heldout_per_case_dice")
    return {f"#{i}": v for i, v in enumerate(legacy)} if isinstance(legacy, list) else None


def rows_from_study(study: optuna.Study) -> list[dict[str, Any]]:
    """One dict per trial with the :data:`COLUMNS` (missing attributes are ``None``/nan)."""
    rows = []
    for t in study.get_trials(deepcopy=False):
        ua = t.user_attrs
        row: dict[str, Any] = {c: ua.get(c) for c in COLUMNS}
        row.update(number=t.number, state=t.state.name, value=t.value if t.value is not None else math.nan,
                   datetime_complete=t.datetime_complete.isoformat(timespec="seconds")
                   if t.datetime_complete else None,
                   params=json.dumps(t.params, sort_keys=True, default=str), heldout_case_dice=_case_dice(ua))
        for c in _NUM:
            row[c] = _num(row[c])
        row.update({k: _num(v) for k, v in ua.items() if CLASS_COLUMN.match(k)})
        rows.append(row)
    for number, first in repeat_of(study.get_trials(deepcopy=False)).items():
        row = next(r for r in rows if r["number"] == number)
        row["state"], row["duplicate_of"] = DUPLICATE, first
    return rows


def write_trials_csv(rows: Sequence[dict[str, Any]], path: Path, header: Sequence[str] = ()) -> Path:
    """Write ``trials.csv`` (``#`` comment lines first: the provenance)."""
    with open(path, "w", newline="") as fh:
        for line in header:
            fh.write(f"# {line}\n")
        w = csv.DictWriter(fh, fieldnames=[*COLUMNS, *class_columns(rows)], extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else
                            json.dumps(v) if k in _JSON else v) for k, v in r.items()})
    return path


def read_trials_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``trials.csv`` written by :func:`write_trials_csv` back into rows."""
    with open(path, newline="") as fh:
        reader = csv.DictReader(line for line in fh if not line.startswith("#"))
        rows = []
        for r in reader:
            row: dict[str, Any] = {c: (r.get(c) or None) for c in COLUMNS}
            for c in _NUM:
                row[c] = _num(row[c])
            for c in _INT:
                row[c] = int(row[c]) if row[c] not in (None, "") else None
            for c in _JSON:
                row[c] = json.loads(row[c]) if row[c] else None
            row.update({k: _num(v) for k, v in r.items() if CLASS_COLUMN.match(k)})
            rows.append(row)
    return rows


def _distinct(rows: Iterable[dict[str, Any]], key: str) -> list[str]:
    return sorted({str(r[key]) for r in rows if r.get(key) not in (None, "")})


def provenance(rows: Sequence[dict[str, Any]], study: str, storage: str) -> dict[str, str]:
    """What produced the finished trials: commit(s), config hashes, data source, hardware, backend, dates."""
    done = [r for r in rows if r["state"] == "COMPLETE"]
    dates = sorted(str(r["datetime_complete"]) for r in done if r.get("datetime_complete"))
    hashes = _distinct(done, "config_hash")
    n_fail, n_pruned, n_dup = (sum(r["state"] == s for r in rows) for s in ("FAIL", "PRUNED", DUPLICATE))
    dup = f", {n_dup} repeats of an earlier trial's parameters" if n_dup else ""
    return {
        "study": f"{study} ({storage})",
        "trials": f"{len(done)} complete of {len(rows)} ({n_fail} failed, {n_pruned} pruned{dup})",
        "commit": ", ".join(_distinct(done, "commit")) or "unknown",
        "config hash": (", ".join(hashes) if len(hashes) <= 4 else
                        f"{len(hashes)} distinct (one per cell; see the config_hash column of trials.csv)"),
        "data source": ", ".join(_distinct(done, "data_source")) or "unknown",
        "hardware": "; ".join(_distinct(done, "hardware")) or "unknown",
        "backend": ", ".join(_distinct(done, "backend")) or "unknown",
        "trial dates": f"{dates[0]} … {dates[-1]}" if dates else "none",
        "report date": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
    }
