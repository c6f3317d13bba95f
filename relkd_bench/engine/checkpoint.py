"""Checkpoints: atomic writes (temp file, then ``os.replace``) and ``torch.load(weights_only=True)``.

Two kinds, both plain dicts of tensors and JSON-like values:

* model checkpoint (``best.pt``): ``{"format": "relkd-model/1", "model": {name, kwargs, in_channels,
  num_classes}, "data": {size, context_slices, normalize}, "state_dict", "epoch", "val_dice", "config",
  "role"}`` — all :func:`load_model` needs;
* training state (``last.pt``): ``{"format": "relkd-train/1", "meta": <model checkpoint fields without
  weights>, "model", "loss", "optimizer", "scheduler", "scaler", "epoch", "best_val", "best_epoch",
  "history", "finished"}``.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from relkd_bench.models import build_model

__all__ = ["MODEL_FORMAT", "TRAIN_FORMAT", "CheckpointError", "load_checkpoint", "load_model", "save_atomic"]

MODEL_FORMAT = "relkd-model/1"
TRAIN_FORMAT = "relkd-train/1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, truncated, corrupt or of the wrong kind."""


def save_atomic(obj: Any, path: str | Path) -> Path:
    """``torch.save`` to a temp file in the same folder, fsync, then rename over ``path``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            torch.save(obj, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_checkpoint(path: str | Path, kind: str | None = None) -> dict:
    """Load a checkpoint with ``weights_only=True`` onto the CPU.

    Args:
        kind: ``MODEL_FORMAT``, ``TRAIN_FORMAT`` or ``None`` (either).

    Raises:
        CheckpointError: the file is missing, unreadable/corrupt, or not the expected kind.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated zip, garbage bytes, unsafe pickle ...
        raise CheckpointError(f"{path}: corrupt or unreadable checkpoint ({type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}); delete it to start "
                              "over") from exc
    fmt = obj.get("format") if isinstance(obj, dict) else None
    if fmt not in (MODEL_FORMAT, TRAIN_FORMAT) or (kind is not None and fmt != kind):
        want = kind or f"{MODEL_FORMAT} or {TRAIN_FORMAT}"
        raise CheckpointError(f"{path}: not a relkd-bench checkpoint of kind {want} (format {fmt!r})")
    return obj


def load_model(path: str | Path, device: torch.device | str = "cpu") -> tuple[torch.nn.Module, dict]:
    """Rebuild the model stored in a model (or training-state) checkpoint.

    Returns:
        ``(model in eval mode on device, checkpoint meta dict)``.
    """
    ckpt = load_checkpoint(path)
    meta = ckpt if ckpt["format"] == MODEL_FORMAT else ckpt["meta"]
    weights = ckpt["state_dict"] if ckpt["format"] == MODEL_FORMAT else ckpt["model"]
    try:
        m = meta["model"]
        model = build_model(m["name"], in_channels=m["in_channels"], num_classes=m["num_classes"],
                            **m["kwargs"])
        model.load_state_dict(weights)
    except (KeyError, RuntimeError, TypeError) as exc:
        raise CheckpointError(f"{path}: cannot rebuild the model ({exc})") from exc
    return model.to(device).eval(), meta
