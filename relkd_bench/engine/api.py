"""Public entry points: teacher training, student training/distillation, checkpoint evaluation."""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from relkd_bench.config import ExperimentConfig, config_hash, teacher_config, teacher_hash
from relkd_bench.data import PreprocessCache, PreprocessConfig, VolumeDataset, scan_collection
from relkd_bench.data.filelock import file_lock
from relkd_bench.data.sites import try_resolve_site
from relkd_bench.engine.checkpoint import TRAIN_FORMAT, load_checkpoint, load_model
from relkd_bench.engine.data import prepare_data
from relkd_bench.engine.metrics import evaluate_volumes, per_site, summarize
from relkd_bench.engine.runtime import backend_name, setup_runtime
from relkd_bench.engine.teacher_check import check_teacher
from relkd_bench.engine.trainer import FitSpec, fit
from relkd_bench.losses import RelKDLoss, build_loss
from relkd_bench.models import build_model

__all__ = ["RunResult", "build_role", "evaluate_checkpoint", "student_loss", "teacher_outputs",
           "train_student", "train_teacher"]


@dataclass
class RunResult:
    """Outcome of one student run.

    Attributes:
        best_val_dice, best_epoch: model selection on source-site validation (epoch 0-based).
        heldout: means over held-out volumes: ``dice``, ``hd95``, ``assd`` (mm; nan values excluded)
            plus ``n`` and ``n_surface_undefined``.
        heldout_per_case: one dict per held-out volume (``uid, site, case_id, dice, hd95, assd``).
        epochs_run: epochs completed (over all resumptions); seconds: wall time of this call;
        seconds_per_epoch: mean epoch time (training + validation) from the log.
        checkpoint: the best-val checkpoint; backend: e.g. ``"native-cpu"``; device: ``"cpu"``/``"cuda"``.
    """

    best_val_dice: float
    best_epoch: int
    heldout: dict[str, float]
    heldout_per_case: list[dict]
    epochs_run: int
    seconds: float
    seconds_per_epoch: float
    checkpoint: Path
    backend: str
    device: str
    config_hash: str = ""
    heldout_site: str = ""
    history: list[dict] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (paths as strings, nan/inf as ``None``)."""
        return _json_safe(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunResult:
        d = dict(d)
        d["checkpoint"] = Path(d["checkpoint"])

        def nan(v: Any) -> Any:
            return math.nan if v is None else v

        d["heldout"] = {k: nan(v) for k, v in d["heldout"].items()}
        d["heldout_per_case"] = [{k: nan(v) for k, v in r.items()} for r in d["heldout_per_case"]]
        d["best_val_dice"] = nan(d["best_val_dice"])
        return cls(**d)


def _json_safe(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, Path):
        return str(x)
    return x


def build_role(cfg: ExperimentConfig, role: str) -> nn.Module:
    """The untrained ``student`` or ``teacher`` model of ``cfg`` (its input channels, classes and size)."""
    mc = getattr(cfg, role)
    model = build_model(mc.name, in_channels=cfg.data.context_slices, num_classes=cfg.data.num_classes,
                        **mc.kwargs)
    m = getattr(model, "size_multiple", 1)
    if cfg.data.size % m:
        raise ValueError(f"data.size={cfg.data.size} is not a multiple of {m}, which {role} {mc.name} needs")
    return model


def teacher_outputs(teacher: nn.Module, objective: RelKDLoss, x: torch.Tensor,
                    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The frozen teacher's logits and the tap features ``objective`` distils from (no autograd graph)."""
    taps = objective.teacher_taps
    with torch.no_grad():
        return teacher.forward_features(x, taps) if taps else (teacher(x), {})


def student_loss(student: nn.Module, objective: RelKDLoss, x: torch.Tensor, y: torch.Tensor,
                 zt: torch.Tensor | None, ft: dict[str, torch.Tensor] | None, amp: bool = False,
                 ) -> tuple[torch.Tensor, dict[str, float]]:
    """The student's forward and ``objective``'s loss on one batch: what one training step differentiates."""
    taps = objective.student_taps
    with torch.autocast(x.device.type, enabled=amp):
        zs, fs = student.forward_features(x, taps) if taps else (student(x), {})
    return objective(zs, y, fs, zt, ft)


def _is_finished(run_dir: Path) -> bool:
    last = run_dir / "last.pt"
    if not (last.is_file() and (run_dir / "best.pt").is_file()):
        return False
    return bool(load_checkpoint(last, TRAIN_FORMAT).get("finished"))


def train_teacher(cfg: ExperimentConfig, workdir: Path | None = None, progress: bool = True) -> Path:
    """Train the teacher on the source sites of ``cfg.data.heldout``; return its best checkpoint.

    The run folder is ``workdir/teacher-<name>-<teacher_hash(cfg)>`` (``workdir`` defaults to
    ``cfg.run.workdir``). A finished run there is reused; an interrupted one resumes from ``last.pt``.
    ``teacher.members > 1``: a deep ensemble of single teachers (:mod:`relkd_bench.engine.teacher_ensemble`).
    """
    if cfg.teacher.members > 1:
        from relkd_bench.engine.teacher_ensemble import train_teacher_ensemble

        return train_teacher_ensemble(cfg, workdir, progress)
    cfg = teacher_config(cfg)
    run_dir = Path(workdir or cfg.run.workdir) / f"teacher-{cfg.teacher.name}-{teacher_hash(cfg)}"
    with file_lock(run_dir / ".lock"):  # parallel workers train a shared teacher once
        if _is_finished(run_dir):
            return run_dir / "best.pt"
        device = setup_runtime(cfg.train)
        run = prepare_data(cfg)
        model = build_role(cfg, "teacher").to(device)
        seg = build_loss("dice_ce")
        amp = cfg.train.amp and device.type == "cuda"

        def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
            with torch.autocast(device.type, enabled=amp):
                logits = model(x)
            loss = seg(logits.float(), y)
            return loss, {}

        mc = cfg.teacher
        spec = FitSpec("teacher", model, mc.name, step, mc.epochs or cfg.train.epochs,
                       mc.lr or cfg.train.lr, run_key=teacher_hash(cfg))
        (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
        out = fit(cfg, spec, run, run_dir, device, progress)
        return out.best_path


def _file_digest(path: Path) -> str:
    return hashlib.sha1(path.read_bytes()).hexdigest()[:8]


def train_student(cfg: ExperimentConfig, teacher_checkpoint: Path | None, workdir: Path | None = None,
                  epoch_callback: Callable[[int, float], None] | None = None,
                  progress: bool = True) -> RunResult:
    """Train the student with ``L_seg + λ1·L_logits + λ2·L_KM + λ3·L_AA`` and score the held-out site once.

    Args:
        cfg: experiment; all λ = 0 trains the no-KD baseline (``teacher_checkpoint`` may be ``None``).
        teacher_checkpoint: a teacher ``best.pt`` (frozen: eval mode, no grad), trained on this student's
            fold: a teacher that saw the held-out site or other data is refused
            (:func:`~relkd_bench.engine.teacher_check.check_teacher`, ``TeacherMismatchError``).
        workdir: output root (default ``cfg.run.workdir``); the run folder is
            ``workdir/student-<name>-<config_hash>[-t<teacher digest>]``.
        epoch_callback: ``callback(epoch, val_dice)`` after each epoch's checkpoint; exceptions propagate.

    Returns:
        :class:`RunResult`; a finished run in the same folder is returned from its ``result.json``.
    """
    t0 = time.perf_counter()
    dc = cfg.distill
    if dc.enabled and teacher_checkpoint is None:
        raise ValueError("distillation is enabled (a lambda > 0) but teacher_checkpoint is None")
    if dc.enabled:  # before anything is reused or trained: a teacher that saw other data is refused
        check_teacher(teacher_checkpoint, cfg)
    tag = f"-t{_file_digest(Path(teacher_checkpoint))}" if dc.enabled else ""
    run_dir = Path(workdir or cfg.run.workdir) / f"student-{cfg.student.name}-{config_hash(cfg)}{tag}"
    result_path = run_dir / "result.json"
    if result_path.is_file():
        return RunResult.from_dict(json.loads(result_path.read_text()))
    device = setup_runtime(cfg.train)
    run = prepare_data(cfg)
    student = build_role(cfg, "student").to(device)
    teacher = None
    if dc.enabled:
        teacher, _ = load_model(teacher_checkpoint, device)
        teacher.requires_grad_(False).eval()
    objective = RelKDLoss(dc, student, teacher, cfg.student.name, cfg.data.num_classes).to(device)
    amp = cfg.train.amp and device.type == "cuda"

    def step(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.autocast(device.type, enabled=amp):
            zt, ft = teacher_outputs(teacher, objective, x) if objective.needs_teacher else (None, None)
        return student_loss(student, objective, x, y, zt, ft, amp)

    mc = cfg.student
    spec = FitSpec("student", student, mc.name, step, mc.epochs or cfg.train.epochs,
                   mc.lr or cfg.train.lr, extra=objective)
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.json").write_text(json.dumps(cfg.to_dict(), indent=1))
    out = fit(cfg, spec, run, run_dir, device, progress, epoch_callback)
    # the single evaluation of the held-out site, with the best-val checkpoint
    best, _ = load_model(out.best_path, device)
    heldout = run.split.heldout_dataset(run.cache)
    rows = evaluate_volumes(best, heldout, device, cfg.train.eval_batch_size, amp)
    secs = [h["seconds"] for h in out.history]
    result = RunResult(
        best_val_dice=out.best_val, best_epoch=out.best_epoch, heldout=summarize(rows), heldout_per_case=rows,
        epochs_run=out.epochs_run, seconds=time.perf_counter() - t0,
        seconds_per_epoch=sum(secs) / len(secs) if secs else math.nan, checkpoint=out.best_path,
        backend=backend_name(device), device=device.type, config_hash=config_hash(cfg),
        heldout_site=run.split.heldout_site, history=out.history)
    tmp = result_path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(result.to_dict(), indent=1))
    tmp.replace(result_path)
    return result


def evaluate_checkpoint(checkpoint: str | Path, data: str | Path, site: str | None = None,
                        device: str = "auto", cache_dir: str | Path | None = None, batch_size: int = 32,
                        keep_lcc: bool = True) -> tuple[list[dict], dict[str, dict[str, float]]]:
    """Score a model checkpoint on a collection root or a one-site folder (e.g. one real case).

    Preprocessing (size, context, normalization) is the one the model was trained with.

    Returns:
        ``(per-case rows, {site: means, ..., "all": means})``.

    Raises:
        CheckpointError: unreadable checkpoint; relkd_bench.data.DataError: bad data.
    """
    from relkd_bench.engine.runtime import resolve_device

    dev = resolve_device(device)
    model, meta = load_model(checkpoint, dev)
    known = try_resolve_site(site) if site else None
    cases, _ = scan_collection(data, sites=[site] if known else None, site_name=site)
    if site:
        name = known.name if known else site
        cases = [c for c in cases if c.site == name]
        if not cases:
            raise ValueError(f"{data}: no case of site {site!r}")
    d = meta["data"]
    label_map = d.get("label_map")  # absent before multi-class tasks: binary
    pcfg = PreprocessConfig(size=d["size"], context_slices=d["context_slices"], normalize=d["normalize"],
                            inplane_spacing=d.get("inplane_spacing"),
                            label_map=tuple(tuple(p) for p in label_map) if label_map else None)
    cache = PreprocessCache(pcfg, cache_dir if cache_dir is not None else Path("runs") / "cache")
    rows = evaluate_volumes(model, VolumeDataset(cases, cache), dev, batch_size, keep_lcc=keep_lcc)
    table = per_site(rows)
    table["all"] = summarize(rows)
    return rows, table


