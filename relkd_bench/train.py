"""Command line: train a teacher or a student on one leave-one-site-out fold.

Examples::

    python -m relkd_bench.train teacher --config quick
    python -m relkd_bench.train student --config quick                       # RelKD (teacher trained/reused)
    python -m relkd_bench.train student --config quick distill.lambda_logits=0 distill.lambda_km=0 \\
        distill.lambda_aa=0                                                   # no-KD baseline
    python -m relkd_bench.train student --config my.yaml --teacher runs/quick/teacher-.../best.pt

Prints a JSON summary on stdout (the teacher checkpoint, or the student's :class:`RunResult`).
Everything a run needs (model names, data root and held-out site, distillation tap pairs, a given teacher
checkpoint) is checked before any training: a problem is one ``error:`` line and exit code 2 (1 for an
unreadable checkpoint), and a failed run leaves no empty run folder behind.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from relkd_bench.config import ExperimentConfig, load_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m relkd_bench.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="Overrides are dotted config keys, e.g. train.seed=1 data.heldout=HK "
                                       "distill.aa_variant=cosine (values parsed as YAML).")
    p.add_argument("role", choices=("teacher", "student"), help="what to train")
    p.add_argument("--config", default="quick", help="preset name (quick, paper) or YAML file [quick]")
    p.add_argument("--teacher", type=Path, default=None,
                   help="teacher checkpoint for a student run (default: train or reuse the configured "
                        "teacher when distillation is enabled)")
    p.add_argument("--workdir", type=Path, default=None, help="output root (default: run.workdir)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="overrides train.device")
    p.add_argument("--no-progress", action="store_true", help="no progress bars / per-epoch lines")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    return p


def preflight(cfg: ExperimentConfig, role: str, teacher_checkpoint: Path | None) -> None:
    """Check what the run needs before any training: the models build (on the meta device, no memory), the
    distillation's tap pairs exist on both models, the data root scans and holds the held-out site.

    Raises:
        ValueError (relkd_bench.data.DataError among them): the first problem found.
        CheckpointError: ``teacher_checkpoint`` is unreadable.
    """
    import torch

    from relkd_bench.data import scan_collection
    from relkd_bench.data.splits import loso_split
    from relkd_bench.engine import build_role
    from relkd_bench.engine.checkpoint import load_model
    from relkd_bench.engine.data import data_root
    from relkd_bench.losses import RelKDLoss

    distill = role == "student" and cfg.distill.enabled
    teacher = None
    if distill and teacher_checkpoint is not None:
        teacher, _ = load_model(teacher_checkpoint, torch.device("cpu"))
    with torch.device("meta"):
        if role == "teacher" or (distill and teacher is None):
            teacher = build_role(cfg, "teacher")
        if role == "student":
            student = build_role(cfg, "student")
            if distill:
                objective = RelKDLoss(cfg.distill, student, teacher, cfg.student.name, cfg.data.num_classes)
                for tap in objective.student_taps:
                    student.feature_channels(tap)
                for tap in objective.teacher_taps:
                    teacher.feature_channels(tap)
    cases, _ = scan_collection(data_root(cfg))
    loso_split(cases, cfg.data.heldout, cfg.data.val_fraction, cfg.data.split_seed)


@contextmanager
def _no_empty_run_folders(workdir: Path) -> Iterator[None]:
    """On failure, remove the run folders this call created that hold nothing but a lock file."""
    before = set(workdir.iterdir()) if workdir.is_dir() else set()
    try:
        yield
    except BaseException:
        for folder in set(workdir.iterdir()) - before if workdir.is_dir() else ():
            if folder.is_dir() and {p.name for p in folder.iterdir()} <= {".lock"}:
                shutil.rmtree(folder, ignore_errors=True)
        raise


def _fail(exc: Exception, code: int) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    try:
        cfg = load_config(args.config, overrides)
    except ValueError as exc:
        return _fail(exc, 2)
    from relkd_bench.data import DataError
    from relkd_bench.engine import CheckpointError, train_student, train_teacher
    from relkd_bench.engine.teacher_check import TeacherMismatchError

    try:
        preflight(cfg, args.role, args.teacher)
    except CheckpointError as exc:
        return _fail(exc, 1)
    except ValueError as exc:  # unknown model, site or tap, missing or corrupt data
        return _fail(exc, 2)
    progress = not args.no_progress
    try:
        with _no_empty_run_folders(Path(args.workdir or cfg.run.workdir)):
            if args.role == "teacher":
                path = train_teacher(cfg, args.workdir, progress=progress)
                print(json.dumps({"teacher_checkpoint": str(path)}, indent=1))
                return 0
            teacher = args.teacher
            if teacher is None and cfg.distill.enabled:
                teacher = train_teacher(cfg, args.workdir, progress=progress)
            result = train_student(cfg, teacher, args.workdir, progress=progress)
    except CheckpointError as exc:
        return _fail(exc, 1)
    except (DataError, TeacherMismatchError) as exc:  # a file that turns out corrupt, a foreign teacher
        return _fail(exc, 2)
    out = result.to_dict()
    out.pop("history", None)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
