r"""Reproduce results/quick: teacher, no-KD student and RelKD student on one held-out site (quick preset),
then the RelKD and no-KD students on the real PROMISE12 case.

    .venv/bin/python results/quick/run_quick.py [--workdir runs/quick] [key=value ...]

Equivalent CLI steps:
    python -m relkd_bench.train teacher --config quick
    python -m relkd_bench.train student --config quick \
        distill.lambda_logits=0 distill.lambda_km=0 distill.lambda_aa=0
    python -m relkd_bench.train student --config quick
    python -m relkd_bench.evaluate --checkpoint <student best.pt> \
        --data ../shared/data/promise12_case00 --site PROMISE12
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import time
from pathlib import Path

import torch

from relkd_bench.config import config_hash, load_config
from relkd_bench.engine import evaluate_checkpoint, load_checkpoint, train_student, train_teacher
from relkd_bench.engine.api import _json_safe

HERE = Path(__file__).resolve().parent
REAL = HERE.parents[2] / "shared" / "data" / "promise12_case00"
NO_KD = ["distill.lambda_logits=0", "distill.lambda_km=0", "distill.lambda_aa=0"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--workdir", default="runs/quick")
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    ov = [f"run.workdir={args.workdir}", *args.overrides]
    cfg = load_config("quick", ov)
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    teacher = train_teacher(cfg)
    t_teacher = time.perf_counter() - t0
    tlog = list(csv.DictReader((teacher.parent / "log.csv").open()))
    tbest = load_checkpoint(teacher)
    # the teacher's held-out score (scored once, here, for the report only; never used for selection)
    trows, ttable = evaluate_checkpoint(teacher, cfg.data.root if cfg.data.root != "synthetic" else
                                        _synthetic_root(cfg), cfg.data.heldout, cfg.train.device,
                                        cfg.data.cache_dir or Path(args.workdir).parent / "cache")
    base = train_student(load_config("quick", ov + NO_KD), None)
    relkd = train_student(cfg, teacher)
    real = {}
    if REAL.is_dir():
        for name, res in (("relkd", relkd), ("no_kd", base)):
            rows, _ = evaluate_checkpoint(res.checkpoint, REAL, "PROMISE12", "cpu",
                                          Path(args.workdir).parent / "cache")
            real[name] = rows[0]
    total = time.perf_counter() - t_all
    tsec = [float(r["seconds"]) for r in tlog]
    summary = {
        "command": "python results/quick/run_quick.py " + " ".join(ov),
        "commit": subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True,
                                 text=True).stdout.strip(),
        "machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, "
                   f"torch {torch.__version__}, {torch.get_num_threads()} threads",
        "config_hash": config_hash(cfg), "heldout_site": relkd.heldout_site,
        "teacher": {"checkpoint": str(teacher), "best_val_dice": tbest["val_dice"],
                    "best_epoch": tbest["epoch"],
                    "heldout": ttable["all"], "epochs": len(tlog), "seconds": sum(tsec),
                    "wall_seconds_this_call": t_teacher, "reused": t_teacher < 0.2 * sum(tsec),
                    "seconds_per_epoch": sum(tsec) / len(tsec)},
        "student_no_kd": {k: v for k, v in base.to_dict().items() if k != "history"},
        "student_relkd": {k: v for k, v in relkd.to_dict().items() if k != "history"},
        "real_promise12_case00": real, "total_seconds": total,
    }
    (HERE / "summary.json").write_text(json.dumps(_json_safe(summary), indent=1))
    with (HERE / "summary.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "heldout_site", "heldout_dice", "heldout_hd95_mm", "heldout_assd_mm",
                    "best_val_dice", "epochs", "seconds_per_epoch", "seconds", "real_case_dice"])
        ta = ttable["all"]
        w.writerow(["teacher " + cfg.teacher.name, relkd.heldout_site, ta["dice"], ta["hd95"], ta["assd"],
                    tbest["val_dice"], len(tlog), sum(tsec) / len(tsec), sum(tsec), ""])
        for name, r in (("student enet no-KD", base), ("student enet RelKD", relkd)):
            key = "no_kd" if r is base else "relkd"
            w.writerow([name, r.heldout_site, r.heldout["dice"], r.heldout["hd95"], r.heldout["assd"],
                        r.best_val_dice, r.epochs_run, r.seconds_per_epoch, r.seconds,
                        real.get(key, {}).get("dice", "")])
    print(json.dumps(_json_safe(summary), indent=1))


def _synthetic_root(cfg):
    from relkd_bench.engine import data_root

    return data_root(cfg)


if __name__ == "__main__":
    main()
