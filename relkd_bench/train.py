"""Command line: train a teacher or a student on one leave-one-site-out fold.

Examples::

    python -m relkd_bench.train teacher --config quick
    python -m relkd_bench.train student --config quick                       # RelKD (teacher trained/reused)
    python -m relkd_bench.train student --config quick distill.lambda_logits=0 distill.lambda_km=0 \\
        distill.lambda_aa=0                                                   # no-KD baseline
    python -m relkd_bench.train student --config my.yaml --teacher runs/quick/teacher-.../best.pt

Prints a JSON summary on stdout (the teacher checkpoint, or the student's :class:`RunResult`).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from relkd_bench.config import load_config


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


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_intermixed_args(argv)
    overrides = list(args.overrides) + ([f"train.device={args.device}"] if args.device else [])
    try:
        cfg = load_config(args.config, overrides)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from relkd_bench.engine import CheckpointError, train_student, train_teacher
    from relkd_bench.engine.teacher_check import TeacherMismatchError

    progress = not args.no_progress
    try:
        if args.role == "teacher":
            path = train_teacher(cfg, args.workdir, progress=progress)
            print(json.dumps({"teacher_checkpoint": str(path)}, indent=1))
            return 0
        teacher = args.teacher
        if teacher is None and cfg.distill.enabled:
            teacher = train_teacher(cfg, args.workdir, progress=progress)
        result = train_student(cfg, teacher, args.workdir, progress=progress)
    except CheckpointError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except TeacherMismatchError as exc:  # e.g. a teacher that saw the held-out site
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = result.to_dict()
    out.pop("history", None)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
