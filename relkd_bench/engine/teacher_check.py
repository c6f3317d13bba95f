"""Which teacher may teach which student: the teacher must have been trained on the student's fold.

A teacher checkpoint stores the config it was trained with. A student refuses it when the teacher's
training sites include the student's held-out site (a different ``data.heldout``), or when any other
data setting that decides what the teacher saw differs: the data source (``root``, the synthetic
generator's parameters), size, context, normalization, the validation split (a teacher trained on the
student's validation cases would bias model selection), and any data setting this version does not know.
Only the settings in :data:`EXEMPT` may differ.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from relkd_bench.config import ExperimentConfig
from relkd_bench.data.sites import try_resolve_site
from relkd_bench.engine.checkpoint import MODEL_FORMAT, load_checkpoint

__all__ = ["EXEMPT", "TeacherMismatchError", "check_teacher", "teacher_mismatches"]

#: Data settings a teacher may have had differently, and why that is harmless.
EXEMPT = {
    "cache_dir": "only where preprocessed volumes are stored",
    "augment": "how the teacher augmented its own training slices, not which cases it saw",
    "empty_fraction": "how the teacher sampled slices of its own training cases, not which cases it saw",
}


class TeacherMismatchError(ValueError):
    """The teacher was trained on other data than the student's fold (e.g. it saw the held-out site)."""


def _flat(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _same_site(a: Any, b: Any) -> bool:
    sa, sb = try_resolve_site(str(a)), try_resolve_site(str(b))
    if sa is not None and sb is not None:
        return sa.name == sb.name
    return str(a).casefold() == str(b).casefold()


def _same_root(a: Any, b: Any) -> bool:
    if a == b or os.path.normpath(str(a)) == os.path.normpath(str(b)):
        return True
    if "synthetic" in (a, b):
        return False
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def teacher_mismatches(teacher_data: Mapping[str, Any], cfg: ExperimentConfig) -> list[str]:
    """Every data setting in which the teacher's ``data`` section (as stored) differs from ``cfg.data``.

    A setting the teacher's config lacks (written before the setting existed) counts as its default.
    Returns one message per difference, naming both values; empty when the teacher fits.
    """
    student = _flat(cfg.to_dict()["data"])
    defaults = _flat(ExperimentConfig().to_dict()["data"])
    teacher = {**defaults, **_flat(teacher_data)}
    synthetic = teacher.get("root") == student["root"] == "synthetic"  # else the roots differ anyway
    problems = []
    if not _same_site(teacher.get("heldout"), student["heldout"]):
        held, own = teacher.get("heldout"), student["heldout"]
        problems.append(f"data.heldout: the teacher held out {held} (data.heldout={held}) and trained on the "
                        f"other sites, {own} among them, which this student holds out (data.heldout={own})")
    for key in sorted(set(teacher) | set(student)):
        if key in ("heldout", *EXEMPT) or (key.startswith("synthetic.") and not synthetic):
            continue
        if key not in student:
            problems.append(f"data.{key}: the teacher was trained with {key}={teacher[key]!r}, a data "
                            "setting this version does not know")
            continue
        t, s = teacher[key], student[key]
        if not (_same_root(t, s) if key == "root" else t == s):
            problems.append(f"data.{key}: teacher {t!r}, student {s!r}")
    return problems


def check_teacher(path: str | Path, cfg: ExperimentConfig) -> None:
    """Refuse the teacher checkpoint at ``path`` for a student configured by ``cfg`` (see module doc).

    Raises:
        TeacherMismatchError: the teacher's data settings differ, or the checkpoint does not record them.
        CheckpointError: unreadable checkpoint.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt if ckpt["format"] == MODEL_FORMAT else ckpt["meta"]
    data = (meta.get("config") or {}).get("data")
    if not isinstance(data, Mapping):
        raise TeacherMismatchError(f"{path}: the checkpoint does not record the data settings the teacher "
                                   "was trained with, so it cannot be checked against the held-out site; "
                                   "retrain the teacher")
    problems = teacher_mismatches(data, cfg)
    if problems:
        raise TeacherMismatchError(
            f"{path}: refusing this teacher, it was not trained on this student's fold: "
            + "; ".join(problems) + ". Use a teacher trained with the student's data settings "
            "(without --teacher, python -m relkd_bench.train student trains or reuses one).")
