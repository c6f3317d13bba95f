"""``python -m relkd_bench.report --storage URL --study NAME --out results/<name>``."""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from pathlib import Path

import optuna

from relkd_bench.ablate.storage import STORAGE_ENV, make_storage, redact
from relkd_bench.report.build import build_report
from relkd_bench.report.collect import read_trials_csv, rows_from_study


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m relkd_bench.report",
                                description="Tables (Markdown, LaTeX, CSV) and PNG figures of a study.")
    p.add_argument("--storage", help=f"as for relkd_bench.ablate (default ${STORAGE_ENV}, else the study's "
                                     "journal file runs/studies/<study>/journal.log)")
    p.add_argument("--study", required=True, help="study name")
    p.add_argument("--out", type=Path, required=True, help="output folder, e.g. results/<study>")
    p.add_argument("--trials-csv", type=Path, help="read this trials.csv instead of the study storage")
    p.add_argument("--efficiency", type=Path, default=Path("results/efficiency.csv"),
                   help="efficiency profile CSV (python -m relkd_bench.profile)")
    p.add_argument("--paired-against", action="append", default=[], metavar="METHOD",
                   help="also compare every method with METHOD of the same fold and seed (repeatable)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        if args.trials_csv:
            rows, study, where = read_trials_csv(args.trials_csv), None, str(args.trials_csv)
        else:
            store = make_storage(args.storage, args.study)
            study = optuna.load_study(study_name=args.study, storage=store.storage)
            rows, where = rows_from_study(study), store.display
        methods = {str(r.get("method")) for r in rows}
        unknown = [m for m in args.paired_against if m not in methods]
        if unknown:
            raise ValueError(f"--paired-against {unknown[0]!r}: no trial of study {args.study!r} has that "
                             f"method; methods: {', '.join(sorted(methods))}")
        paths = build_report(rows, args.out, args.study, where, study, args.efficiency, args.paired_against)
    except Exception as exc:  # no password in the output: everything shown is redacted
        if os.environ.get("RELKD_DEBUG"):
            print(redact(traceback.format_exc()), file=sys.stderr)
        print(f"error: {redact(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 2
    print(f"report of study {args.study!r} ({len(rows)} trials) written to {args.out}/: "
          + ", ".join(p.name for p in paths))
    return 0


if __name__ == "__main__":
    sys.exit(main())
