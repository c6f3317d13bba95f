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
        model: the trained network; model_name/model_kwargs rebuild it from a checkpoint.
        step: ``step(x [B, C, H, W], y [B, 1, H, W]) -> (loss, parts)`` (forward passes inside autocast).
        extra: a module with more trainable state (e.g. the KMM adapters), checkpointed with the model.
        epochs, lr: the schedule.
        run_key: identifies the run for resumption (a ``last.pt`` with another key is refused); the
            teacher uses :func:`~relkd_bench.config.teacher_hash`, the student the full config hash.
    """

    role: str
    model: nn.Module
    model_name: str
    model_kwargs: dict
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
    """Everything but the weights that :func:`relkd_bench.engine.checkpoint.load_model` needs."""
    return {"format": MODEL_FORMAT, "role": spec.role,
            "model": {"name": spec.model_name, "kwargs": cfg.to_dict()[spec.role]["kwargs"],
                      "in_channels": cfg.data.context_slices, "num_classes": 2},
            "data": {"size": cfg.data.size, "context_slices": cfg.data.context_slices,
                     "normalize": cfg.data.normalize, "inplane_spacing": cfg.data.inplane_spacing},
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


def fit(cfg: ExperimentConfig, spec: FitSpec, run: RunData, run_dir: Path, device: torch.device,
        progress: bool = True, epoch_callback: Callable[[int, float], None] | None = None) -> FitOutcome:
    """Train ``spec.model`` for ``spec.epochs`` epochs, resuming from ``run_dir/last.pt`` if present.

    Model selection: the epoch with the best mean 3D Dice on the source-site validation volumes
    (``best.pt``). ``epoch_callback(epoch, val_dice)`` (``epoch`` 0-based) runs after the epoch's
    checkpoints are written; what it raises propagates unchanged.
    """
    run_dir.mkdir(parents=True, exist_ok=True)
    last_path, best_path, csv_path = run_dir / "last.pt", run_dir / "best.pt", run_dir / "log.csv"
    tc = cfg.train
    amp = tc.amp and device.type == "cuda"
    params = list(spec.model.parameters()) + (list(spec.extra.parameters()) if spec.extra is not None else [])
    opt = torch.optim.AdamW(params, lr=spec.lr, weight_decay=tc.weight_decay)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=spec.epochs, eta_min=spec.lr * 0.02)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    meta = model_meta(cfg, spec)
    start, best_val, best_epoch, history = 0, -math.inf, -1, []
    if last_path.exists():
        state = load_checkpoint(last_path, TRAIN_FORMAT)
        if state["meta"].get("run_key") != meta["run_key"]:
            raise CheckpointError(f"{last_path}: written by a different configuration "
                                  f"(run key {state['meta'].get('run_key')} != {meta['run_key']})")
        try:
            spec.model.load_state_dict(state["model"])
            if spec.extra is not None:
                spec.extra.load_state_dict(state["loss"])
            opt.load_state_dict(state["optimizer"])
            sched.load_state_dict(state["scheduler"])
            if state["scaler"]:
                scaler.load_state_dict(state["scaler"])
        except (KeyError, RuntimeError, ValueError) as exc:
            raise CheckpointError(f"{last_path}: cannot restore the training state ({exc})") from exc
        start, best_val, best_epoch = state["epoch"], state["best_val"], state["best_epoch"]
        history = list(state["history"])
    val_ds = run.split.val_dataset(run.cache)
    for epoch in range(start, spec.epochs):
        t0 = time.perf_counter()
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
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            parts = {"loss": float(loss.detach()), **parts}
            for k, v in parts.items():
                sums[k] = sums.get(k, 0.0) + v
            bar.set_postfix(loss=f"{parts['loss']:.3f}")
            bar.update()
        bar.close()
        sched.step()
        t_train = time.perf_counter() - t0
        rows = evaluate_volumes(spec.model, val_ds, device, tc.eval_batch_size, amp, surface=False)
        val = summarize(rows, ("dice",))["dice"] if rows else math.nan
        improved = not math.isnan(val) and val > best_val
        if improved:
            best_val, best_epoch = val, epoch
            save_atomic({**meta, "state_dict": spec.model.state_dict(), "epoch": epoch, "val_dice": val},
                        best_path)
        row = {"epoch": epoch, **{f"train_{k}": round(v / max(n_steps, 1), 6) for k, v in sums.items()},
               "val_dice": round(val, 6), "lr": opt.param_groups[0]["lr"], "steps": n_steps,
               "train_seconds": round(t_train, 3), "seconds": round(time.perf_counter() - t0, 3)}
        history.append(row)
        save_atomic({"format": TRAIN_FORMAT, "meta": meta, "model": spec.model.state_dict(),
                     "loss": spec.extra.state_dict() if spec.extra is not None else {},
                     "optimizer": opt.state_dict(), "scheduler": sched.state_dict(),
                     "scaler": scaler.state_dict() if amp else {}, "epoch": epoch + 1, "best_val": best_val,
                     "best_epoch": best_epoch, "history": history, "finished": epoch + 1 == spec.epochs},
                    last_path)
        _write_csv(csv_path, history)
        line = (f"[{spec.role}] epoch {epoch + 1}/{spec.epochs} loss {row.get('train_loss', 0):.4f} "
                f"val Dice {val:.4f}{' *' if improved else ''} ({row['seconds']:.1f} s)")
        if progress:
            tqdm.write(line)
        else:
            _LOG.info(line)
        if epoch_callback is not None:
            epoch_callback(epoch, val)
    if not best_path.exists():  # every validation was nan (no validation cases): keep the last model
        save_atomic({**meta, "state_dict": spec.model.state_dict(), "epoch": spec.epochs - 1,
                     "val_dice": math.nan}, best_path)
        best_epoch = spec.epochs - 1
    return FitOutcome(best_val, best_epoch, len(history), history, best_path, last_path)
