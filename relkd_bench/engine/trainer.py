"""The epoch loop shared by teacher and student training: resume, validation, checkpoints, CSV log.

Every epoch re-seeds torch, the slice sampling, the shuffling and the augmentation from
``(train.seed, epoch)``, and the training state (model, loss adapters, optimizer, scheduler, AMP
scaler) is checkpointed after each epoch, so a run resumed from ``last.pt`` replays the remaining epochs
exactly as an uninterrupted run would (CPU).

After each epoch one progress line (epoch, mean training loss, validation Dice, seconds) goes to the
console under the progress bars, or, with ``progress=False``, to the ``logging`` logger of this module
at INFO level: silent unless someone attaches a handler (each ablation worker does, with its prefix).
"""

from __future__ import annotations

import csv
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from relkd_bench.config import ExperimentConfig, config_hash
from relkd_bench.engine.checkpoint import (
    MODEL_FORMAT,
    TRAIN_FORMAT,
    CheckpointError,
    load_checkpoint,
    save_atomic,
)
from relkd_bench.engine.data import RunData, make_train_loader
from relkd_bench.engine.metrics import evaluate_volumes, summarize
from relkd_bench.engine.runtime import epoch_seed

__all__ = ["FitOutcome", "FitSpec", "fit"]

_LOG = logging.getLogger(__name__)

StepFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]]


@dataclass
class FitSpec:
    """What to train.

    Attributes:
        role: ``"teacher"`` or ``"student"``.
        model: the trained network; ``model_name`` and the config's ``<role>.kwargs`` rebuild it from a
            checkpoint.
        step: ``step(x [B, C, H, W], y [B, 1, H, W]) -> (loss, parts)`` (forward passes inside autocast).
        extra: a module with more trainable state (e.g. the KMM adapters), checkpointed with the model.
        epochs, lr: the schedule.
        run_key: identifies the run for resumption (a ``last.pt`` with another key is refused); the
            teacher uses :func:`~relkd_bench.config.teacher_hash`, the student the full config hash.
    """

    role: str
    model: nn.Module
    model_name: str
    step: StepFn
    epochs: int
    lr: float
    extra: nn.Module | None = None
    run_key: str = ""


@dataclass
class FitOutcome:
    best_val: float
    best_epoch: int
    epochs_run: int
    history: list[dict] = field(default_factory=list)
    best_path: Path | None = None
    last_path: Path | None = None


def model_meta(cfg: ExperimentConfig, spec: FitSpec) -> dict:
    """Everything but the weights that :func:`relkd_bench.engine.checkpoint.load_model` needs, and the
    preprocessing (label map included) that evaluating the model replays."""
    d = cfg.data
    label_map = d.label_pairs()
    return {"format": MODEL_FORMAT, "role": spec.role,
            "model": {"name": spec.model_name, "kwargs": cfg.to_dict()[spec.role]["kwargs"],
                      "in_channels": d.context_slices, "num_classes": d.num_classes},
            "data": {"size": d.size, "context_slices": d.context_slices, "normalize": d.normalize,
                     "inplane_spacing": d.inplane_spacing,
                     "label_map": [list(p) for p in label_map] if label_map is not None else None},
            "config": cfg.to_dict(), "config_hash": config_hash(cfg),
            "run_key": spec.run_key or config_hash(cfg)}


def _write_csv(path: Path, history: list[dict]) -> None:
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    tmp = path.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=keys)
        w.writeheader()
        w.writerows(history)
    tmp.replace(path)


@dataclass
class _State:
    """What ``last.pt`` holds besides the weights: optimizer, schedule, scaler and the epochs so far."""

    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    amp: bool
    start: int = 0
    best_val: float = -math.inf
    best_epoch: int = -1
    history: list[dict] = field(default_factory=list)


def _new_state(cfg: ExperimentConfig, spec: FitSpec, device: torch.device) -> _State:
    """AdamW over the model and ``spec.extra``, cosine decay to 2 % of the rate over the epochs."""
    amp = cfg.train.amp and device.type == "cuda"
    params = list(spec.model.parameters()) + (list(spec.extra.parameters()) if spec.extra is not None else [])
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=cfg.train.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs, eta_min=spec.lr * 0.02)
    return _State(opt, sched, torch.amp.GradScaler(device.type, enabled=amp), amp)


def _resume(state: _State, spec: FitSpec, meta: dict, last_path: Path) -> None:
    """Restore the model, ``spec.extra`` and ``state`` from ``last_path`` when it exists.

    Raises:
        CheckpointError: ``last.pt`` belongs to another run (run key) or does not fit the model.
    """
    if not last_path.exists():
        return
    saved = load_checkpoint(last_path, TRAIN_FORMAT)
    if saved["meta"].get("run_key") != meta["run_key"]:
        raise CheckpointError(f"{last_path}: written by a different configuration "
                              f"(run key {saved['meta'].get('run_key')} != {meta['run_key']})")
    try:
        spec.model.load_state_dict(saved["model"])
        if spec.extra is not None:
            spec.extra.load_state_dict(saved["loss"])
        state.opt.load_state_dict(saved["optimizer"])
        state.sched.load_state_dict(saved["scheduler"])
        if saved["scaler"]:
            state.scaler.load_state_dict(saved["scaler"])
    except (KeyError, RuntimeError, ValueError) as exc:
        raise CheckpointError(f"{last_path}: cannot restore the training state ({exc})") from exc
    state.start, state.best_val, state.best_epoch = saved["epoch"], saved["best_val"], saved["best_epoch"]
    state.history = list(saved["history"])


def _train_epoch(cfg: ExperimentConfig, spec: FitSpec, run: RunData, state: _State, epoch: int,
                 device: torch.device, progress: bool) -> tuple[dict[str, float], int]:
    """One epoch of optimizer steps, seeded by ``(train.seed, epoch)``; returns (summed parts, steps)."""
    tc = cfg.train
    seed = epoch_seed(tc.seed, epoch)
    torch.manual_seed(seed)
    loader = make_train_loader(cfg, run, epoch, seed, role=spec.role)
    n_steps = len(loader) if tc.max_steps_per_epoch == 0 else min(len(loader), tc.max_steps_per_epoch)
    spec.model.train()
    sums: dict[str, float] = {}
    bar = tqdm(total=n_steps, desc=f"{spec.role} {epoch + 1}/{spec.epochs}", disable=not progress,
               leave=False, dynamic_ncols=True)
    for i, batch in enumerate(loader):
        if i >= n_steps:
            break
        x = batch["image"].to(device, non_blocking=True)
        y = batch["label"].to(device, non_blocking=True)
        loss, parts = spec.step(x, y)
        state.opt.zero_grad(set_to_none=True)
        state.scaler.scale(loss).backward()
        state.scaler.step(state.opt)
        state.scaler.update()
        parts = {"loss": float(loss.detach()), **parts}
        for k, v in parts.items():
            sums[k] = sums.get(k, 0.0) + v
        bar.set_postfix(loss=f"{parts['loss']:.3f}")
        bar.update()
    bar.close()
    state.sched.step()
    return sums, n_steps


def _save_last(spec: FitSpec, state: _State, meta: dict, epoch: int, last_path: Path) -> None:
    """The training state after ``epoch`` (0-based), from which a resumed run continues exactly."""
    save_atomic({"format": TRAIN_FORMAT, "meta": meta, "model": spec.model.state_dict(),
                 "loss": spec.extra.state_dict() if spec.extra is not None else {},
                 "optimizer": state.opt.state_dict(), "scheduler": state.sched.state_dict(),
                 "scaler": state.scaler.state_dict() if state.amp else {}, "epoch": epoch + 1,
                 "best_val": state.best_val, "best_epoch": state.best_epoch, "history": state.history,
                 "finished": epoch + 1 == spec.epochs}, last_path)


def _validate(cfg: ExperimentConfig, spec: FitSpec, state: _State, val_ds: Dataset, device: torch.device,
              epoch: int, meta: dict, best_path: Path) -> tuple[float, bool]:
    """Mean 3D Dice on the validation volumes (``nan`` without any); a new best is written to ``best.pt``.

    Returns:
        ``(val_dice, improved)``.
    """
    rows = evaluate_volumes(spec.model, val_ds, device, cfg.train.eval_batch_size, state.amp, surface=False)
    val = summarize(rows, ("dice",))["dice"] if rows else math.nan
    improved = not math.isnan(val) and val > state.best_val
    if improved:
        state.best_val, state.best_epoch = val, epoch
        save_atomic({**meta, "state_dict": spec.model.state_dict(), "epoch": epoch, "val_dice": val},
                    best_path)
    return val, improved


def _report(line: str, progress: bool) -> None:
    """One progress line: under the bars with ``progress``, else to this module's logger (INFO)."""
    if progress:
        tqdm.write(line)
    else:
        _LOG.info(line)


def fit(cfg: ExperimentConfig, spec: FitSpec, run: RunData, run_dir: Path, device: torch.device,
        progress: bool = True, epoch_callback: Callable[[int, float], None] | None = None) -> FitOutcome:
    """Train ``spec.model`` for ``spec.epochs`` epochs, resuming from ``run_dir/last.pt`` if present.

    Model selection: the epoch with the best mean 3D Dice on the source-site validation volumes
    (``best.pt``). ``epoch_callback(epoch, val_dice)`` (``epoch`` 0-based) runs after the epoch's
    checkpoints are written; what it raises propagates unchanged.

    Each epoch: train (:func:`_train_epoch`), validate and keep the best (:func:`_validate`), append a
    row to the history, write ``last.pt`` (:func:`_save_last`) and ``log.csv``, print one line.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, csv_path = run_dir / "last.pt", run_dir / "best.pt", run_dir / "log.csv"
    meta = model_meta(cfg, spec)
    state = _new_state(cfg, spec, device)
    _resume(state, spec, meta, last_path)
    val_ds = run.split.val_dataset(run.cache)
    for epoch in range(state.start, spec.epochs):
        t0 = time.perf_counter()
        sums, n_steps = _train_epoch(cfg, spec, run, state, epoch, device, progress)
        t_train = time.perf_counter() - t0
        val, improved = _validate(cfg, spec, state, val_ds, device, epoch, meta, best_path)
        row = {"epoch": epoch, **{f"train_{k}": round(v / max(n_steps, 1), 6) for k, v in sums.items()},
               "val_dice": round(val, 6), "lr": state.opt.param_groups[0]["lr"], "steps": n_steps,
               "train_seconds": round(t_train, 3), "seconds": round(time.perf_counter() - t0, 3)}
        state.history.append(row)
        _save_last(spec, state, meta, epoch, last_path)
        _write_csv(csv_path, state.history)
        _report(f"[{spec.role}] epoch {epoch + 1}/{spec.epochs} loss {row.get('train_loss', 0):.4f} "
                f"val Dice {val:.4f}{' *' if improved else ''} ({row['seconds']:.1f} s)", progress)
        if epoch_callback is not None:
            epoch_callback(epoch, val)
    if not best_path.exists():  # every validation was nan (no validation cases): keep the last model
        save_atomic({**meta, "state_dict": spec.model.state_dict(), "epoch": spec.epochs - 1,
                     "val_dice": math.nan}, best_path)
        state.best_epoch = spec.epochs - 1
    return FitOutcome(state.best_val, state.best_epoch, len(state.history), state.history, best_path,
                      last_path)
