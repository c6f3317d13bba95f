"""Objectives: the real one (engine: teacher + student, source-validation Dice) and ``smoke``.

``smoke`` is a harness self-test: no training, a deterministic fake score per cell after a short sleep.
It exercises storage, claiming, heartbeats and reports (CI's two-worker PostgreSQL test uses it) and
records ``data_source = "smoke"`` so nobody mistakes it for a result.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import logging
import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

import optuna

from relkd_bench.ablate.plan import Objective, TrialPlan
from relkd_bench.ablate.spec import TEACHER, AblationSpec

__all__ = ["engine_objective", "git_commit", "hardware", "make_objective", "smoke_objective"]

REPO = Path(__file__).resolve().parents[2]
_LOG = logging.getLogger(__name__)  # live progress lines (see ablate.worker.attach_live_progress)


@functools.lru_cache(maxsize=1)
def git_commit() -> str:
    """Short commit of the checkout, ``+dirty`` when tracked files differ; ``unknown`` outside git."""
    try:
        run = functools.partial(subprocess.run, cwd=REPO, capture_output=True, text=True, timeout=10)
        head = run(["git", "rev-parse", "--short", "HEAD"]).stdout.strip()
        dirty = run(["git", "status", "--porcelain", "--untracked-files=no"]).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return (head + ("+dirty" if dirty else "")) if head else "unknown"


@functools.lru_cache(maxsize=4)
def hardware(device: str = "cpu") -> str:
    """``"AMD EPYC … (2 logical CPUs, x86_64)"`` or the CUDA device name."""
    if device.startswith("cuda"):
        import torch

        return f"{torch.cuda.get_device_name(0)} (CUDA {torch.version.cuda})"
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{model} ({os.cpu_count()} logical CPUs, {platform.machine()})"


def _pruning_callback(trial: optuna.Trial):
    def callback(epoch: int, val_dice: float) -> None:
        trial.report(float(val_dice), epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch} (val Dice {val_dice:.4f})")

    return callback


def _num(x: Any) -> float | None:
    return float(x) if isinstance(x, (int, float)) and x == x else None


def _teacher_heldout(cfg: Any, checkpoint: Path) -> dict[str, float | None]:
    """The teacher's held-out Dice/HD95, computed once per teacher and cached next to its checkpoint."""
    import json

    from relkd_bench import engine
    from relkd_bench.engine.data import cache_dir

    cached = checkpoint.with_name(f"heldout-{cfg.data.heldout}.json")
    if cached.is_file():
        return json.loads(cached.read_text())
    _, table = engine.evaluate_checkpoint(checkpoint, engine.data_root(cfg), site=cfg.data.heldout,
                                          device=cfg.train.device, cache_dir=cache_dir(cfg),
                                          batch_size=cfg.train.eval_batch_size)
    out = {"teacher_heldout_dice": _num(table["all"].get("dice")),
           "teacher_heldout_hd95": _num(table["all"].get("hd95"))}
    # Workers that finish with the same teacher at the same moment each write their own temp file.
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(out))
    tmp.replace(cached)
    return out


def _teacher_trial(trial: optuna.Trial, cfg: Any, progress: bool) -> float:
    """Method ``teacher``: train (or reuse) the teacher of this seed and fold; its held-out Dice/HD95 are
    the trial's ``heldout_*`` attributes and its best source-validation Dice the trial's value."""
    from relkd_bench import engine
    from relkd_bench.engine.checkpoint import MODEL_FORMAT, load_checkpoint

    path = Path(engine.train_teacher(cfg, progress=progress))
    held = _teacher_heldout(cfg, path)
    attrs = {**held, "heldout_dice": held["teacher_heldout_dice"],
             "heldout_hd95": held["teacher_heldout_hd95"], "checkpoint": str(path),
             "backend": "none (no distillation)", "device": cfg.train.device,
             "hardware": hardware(cfg.train.device)}
    for k, v in attrs.items():
        trial.set_user_attr(k, v)
    return float(load_checkpoint(path, MODEL_FORMAT).get("val_dice", float("nan")))


def engine_objective(spec: AblationSpec, progress: bool = True) -> Objective:
    """Train (or reuse) the teacher, train the student with pruning, record held-out metrics as attrs."""
    prepared: set[str] = set()

    def objective(trial: optuna.Trial, plan: TrialPlan) -> float:
        from relkd_bench import engine
        from relkd_bench.config import config_hash, load_config
        from relkd_bench.data.filelock import file_lock
        from relkd_bench.engine.metrics import class_keys

        cfg = load_config(spec.base, plan.overrides)
        d = cfg.distill
        real = cfg.data.root != "synthetic"
        attrs: dict[str, Any] = {
            "method": plan.method,
            "seed": cfg.train.seed, "heldout": cfg.data.heldout, "student": cfg.student.name,
            "teacher": cfg.teacher.name, "config_hash": config_hash(cfg), "commit": git_commit(),
            "data_source": f"real ({cfg.data.root})" if real else "synthetic",
            "overrides": {k: v for k, v in plan.overrides.items()},
        }
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        data_key = hashlib.sha1(repr(cfg.to_dict()["data"]).encode()).hexdigest()[:12]
        if data_key not in prepared:  # generate/cache the data once, not concurrently
            _LOG.info("preparing the data (generated and cached on first use; waits for another worker "
                      "doing it)")
            with file_lock(Path(cfg.run.workdir).parent / "locks" / f"data-{data_key}.lock"):
                engine.prepare_data(cfg)
            prepared.add(data_key)
        if plan.method == TEACHER:
            return _teacher_trial(trial, cfg, progress)
        if d.enabled:
            _LOG.info(f"teacher {cfg.teacher.name}: reused when trained, else trained now (or after the "
                      "worker training it)")
        teacher = engine.train_teacher(cfg, progress=progress) if d.enabled else None
        if teacher is not None:  # for the Dice-vs-GFLOPs figure only; never used for selection
            for k, v in _teacher_heldout(cfg, Path(teacher)).items():
                trial.set_user_attr(k, v)
        _LOG.info(f"student {cfg.student.name} ({attrs['method']}, seed {cfg.train.seed}): training")
        res = engine.train_student(cfg, teacher, epoch_callback=_pruning_callback(trial), progress=progress)
        out = {
            "heldout_dice": _num(res.heldout.get("dice")), "heldout_hd95": _num(res.heldout.get("hd95")),
            "heldout_assd": _num(res.heldout.get("assd")), "heldout_n": res.heldout.get("n"),
            "heldout_per_case_dice": [_num(r.get("dice")) for r in res.heldout_per_case],
            "heldout_case_dice": {str(r["uid"]): _num(r.get("dice")) for r in res.heldout_per_case},
            "best_epoch": res.best_epoch, "epochs_run": res.epochs_run, "seconds": round(res.seconds, 1),
            "seconds_per_epoch": _num(res.seconds_per_epoch), "backend": res.backend, "device": res.device,
            "hardware": hardware(res.device), "checkpoint": str(res.checkpoint),
            # more than 2 classes: per-class means, e.g. heldout_dice_c1 (engine.metrics module doc)
            **{f"heldout_{k}": _num(v) for k, v in res.heldout.items() if k in class_keys([res.heldout])},
        }
        for k, v in out.items():
            trial.set_user_attr(k, v)
        return float(res.best_val_dice)

    return objective


def smoke_objective(spec: AblationSpec) -> Objective:
    """Harness self-test objective (no training): see the module docstring."""
    seconds = float(spec.smoke.get("seconds", 0.0))
    epochs = int(spec.smoke.get("epochs", 3))

    def objective(trial: optuna.Trial, plan: TrialPlan) -> float:
        key = repr(sorted(plan.params.items()))
        jitter = int(hashlib.sha1(key.encode()).hexdigest()[:6], 16) / 0xFFFFFF
        n_mod = 0 if plan.method == "none" else plan.method.count("+") + 1
        value = 0.70 + 0.03 * n_mod + 0.02 * jitter
        for epoch in range(epochs):
            time.sleep(seconds / max(epochs, 1))
            _pruning_callback(trial)(epoch, value * (epoch + 1) / epochs)
        p = plan.params
        attrs = {"method": plan.method, "seed": p.get("seed", 0), "heldout": p.get("heldout", "BIDMC"),
                 "student": p.get("student", "enet"),
                 "heldout_dice": value - 0.08, "heldout_hd95": 12.0 - 4 * value, "config_hash": "smoke",
                 "commit": git_commit(), "data_source": "smoke (harness self-test, no training)",
                 "backend": "none", "device": "cpu", "hardware": hardware("cpu")}
        for k, v in attrs.items():
            trial.set_user_attr(k, v)
        return value

    return objective


def make_objective(spec: AblationSpec, progress: bool = True) -> Objective:
    """The objective named by ``spec.objective``."""
    return smoke_objective(spec) if spec.objective == "smoke" else engine_objective(spec, progress)
