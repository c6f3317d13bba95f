"""``python -m relkd_bench.ablate``: run (or resume) an ablation study, then write its tables.

With no arguments: ``ablations/quick.yaml``, a smoke run (the eight module sets, one seed, one held-out
synthetic site, quick preset: it shows that the pipeline works and ranks nothing), journal storage under
``runs/studies/quick/``, tables in ``runs/studies/quick/report/``.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
import traceback
from pathlib import Path

import optuna

from relkd_bench.ablate.best import methods_yaml
from relkd_bench.ablate.objectives import REPO
from relkd_bench.ablate.spec import AblationSpec, load_spec
from relkd_bench.ablate.storage import STORAGE_ENV, make_storage, redact
from relkd_bench.ablate.worker import open_study, progress_counts, worker_main

EPILOG = f"""\
storage (--storage, else ${STORAGE_ENV}, else a journal file):
  runs/x/journal.log | journal:PATH   journal file: several processes on one machine (default:
                                      runs/studies/<study>/journal.log)
  sqlite:///runs/x.db                 one process
  postgresql://USER@HOST:5432/DB      workers on several machines share the study; the password comes
                                      from the URL, PGPASSWORD or ~/.pgpass and is never printed.
                                      Prefer ${STORAGE_ENV} over --storage to keep it out of `ps`.
many machines: run the same command (same --config, --storage, --study-name) on each machine.
resume: rerun the same command; finished trials are kept, stale ones (killed workers) are retried.
dashboard: pip install optuna-dashboard; optuna-dashboard runs/studies/<study>/journal.log
           (or optuna-dashboard postgresql+psycopg2://USER:PASSWORD@HOST/DB)
"""


def default_config() -> Path:
    for root in (Path.cwd(), REPO):
        if (root / "ablations" / "quick.yaml").is_file():
            return root / "ablations" / "quick.yaml"
    raise SystemExit("error: ablations/quick.yaml not found; pass --config")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m relkd_bench.ablate", epilog=EPILOG,
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                description="Run or resume an Optuna ablation study of relation-based KD.")
    p.add_argument("--config", type=Path, help="ablation spec YAML (default: ablations/quick.yaml)")
    p.add_argument("--storage", help="journal path, sqlite:/// or postgresql:// URL (see below)")
    p.add_argument("--study-name", help="Optuna study name (default: the spec's name)")
    p.add_argument("--n-trials", type=int, help="requested total of finished trials (grid: first N cells)")
    p.add_argument("--timeout", type=float, help="stop claiming new trials after S seconds")
    p.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1),
                   help="worker processes on this machine, one torch thread each (default: min(2, cores))")
    p.add_argument("--retry-failed", action="store_true",
                   help="give cells that failed for good another round")
    p.add_argument("--report-dir", type=Path,
                   help="tables/figures folder (default runs/studies/<study>/report)")
    p.add_argument("--no-report", action="store_true", help="do not write tables afterwards")
    p.add_argument("--quiet", action="store_true", help="no progress bars and no per-epoch progress lines")
    p.add_argument("--best", metavar="NAME",
                   help="print the best finished trial of a TPE study as a `methods:` entry named NAME "
                        "and exit (for a spec that evaluates it on other folds)")
    return p


def _print_best(args: argparse.Namespace, spec: AblationSpec, name: str) -> int:
    store = make_storage(args.storage, name)
    print(methods_yaml(optuna.load_study(study_name=name, storage=store.storage), spec, args.best), end="")
    return 0


def _run(args: argparse.Namespace, spec: AblationSpec, config: Path, name: str) -> int:
    store = make_storage(args.storage, name)
    study = open_study(spec, store, name, spec.seed)
    total = min(args.n_trials, spec.total) if args.n_trials and spec.sampler == "grid" else (
        args.n_trials or spec.total)
    c = progress_counts(study)
    done = c.get("COMPLETE", 0) + c.get("PRUNED", 0)
    print(f"study {name!r} ({spec.sampler}, objective {spec.objective}) on {store.display}: "
          f"{total} trials requested, {done} already finished", flush=True)
    t0 = time.time()
    progress = not args.quiet and args.workers == 1
    if args.workers <= 1:
        worker_main(str(config), store.url, name, args.n_trials, args.timeout, args.retry_failed, -1,
                    progress, not args.quiet)
    else:
        ctx = mp.get_context("spawn")  # the URL travels through a pipe, never through argv
        jobs = [(str(config), store.url, name, args.n_trials, args.timeout, args.retry_failed, i, False,
                 not args.quiet) for i in range(args.workers)]
        procs = [ctx.Process(target=worker_main, args=job) for job in jobs]
        for proc in procs:
            proc.start()
        try:
            for proc in procs:
                proc.join()
        except KeyboardInterrupt:
            for proc in procs:
                proc.terminate()
            raise
    c = progress_counts(study)
    print(f"study {name!r}: {c.get('COMPLETE', 0)} complete, {c.get('PRUNED', 0)} pruned, "
          f"{c.get('FAIL', 0)} failed trials (failed ones keep their error as a user attribute), "
          f"{time.time() - t0:.0f} s", flush=True)
    if spec.sampler == "grid" and len(spec.grid.get("seed", [None])) == 1:
        print(f"study {name!r} is a smoke run: one seed per cell, so its tables rank nothing (a single run "
              "moves by more than the differences between methods); compare methods with several seeds, "
              "e.g. --config ablations/modules.yaml", flush=True)
    if not args.no_report:
        out = args.report_dir or Path("runs") / "studies" / name / "report"
        env = {**os.environ, STORAGE_ENV: store.url or ""}
        cmd = [sys.executable, "-m", "relkd_bench.report", "--study", name, "--out", str(out)]
        return subprocess.run(cmd, env=env).returncode
    return 0


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    config = args.config or default_config()
    try:
        spec = load_spec(config)
        if args.best:
            return _print_best(args, spec, args.study_name or spec.name)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        return _run(args, spec, config, args.study_name or spec.name)
    except KeyboardInterrupt:
        print("interrupted: rerun the same command to resume", file=sys.stderr)
        return 130
    except Exception as exc:  # every line shown goes through redact(): no password in the output
        if os.environ.get("RELKD_DEBUG"):
            print(redact(traceback.format_exc()), file=sys.stderr)
        print(f"error: {redact(f'{type(exc).__name__}: {exc}')}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
