"""What distillation adds to a training step: one optimizer step of the student, per distillation term.

Users decide by the cost of a step, not of a loss. For a preset (its student, teacher, batch and input
size), one step is the student's forward, the loss, the backward and the AdamW update, exactly as
:func:`relkd_bench.engine.student_loss` computes it in training. The teacher's forward (no autograd) is
timed on its own and left out of the step: its outputs are computed once per variant, since every KD
term needs them and their cost does not depend on the term.

Variants (:data:`VARIANTS`): no KD, each module alone (LM; KM; AA class-aware at full resolution; AA
relation_kl at pool 1, 2 and 4) and all three at the preset's weights, timed round-robin (one step of
each per round) so that the machine's slow phases weigh on all of them alike. Each row carries its
overhead over the no-KD step of the same run (``overhead_vs_no_kd``). Inputs are random images with a
disc-shaped label (the class-aware AA needs both classes present); the models are untrained, which does
not change the work a step does.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable
from typing import Any

import torch

from relkd_bench.bench import peak_extra_mb, time_ms

__all__ = ["VARIANTS", "profile_step", "step_rows"]

_OFF = {"distill.lambda_logits": 0.0, "distill.lambda_km": 0.0, "distill.lambda_aa": 0.0}


def _aa(variant: str, pool: int) -> dict[str, Any]:
    return {"distill.lambda_logits": 0.0, "distill.lambda_km": 0.0, "distill.aa_variant": variant,
            "distill.aa_pool": pool}


#: Variant label → config overrides on top of the preset (a module alone keeps the preset's λ).
VARIANTS: dict[str, dict[str, Any]] = {
    "no KD": _OFF,
    "LM": {"distill.lambda_km": 0.0, "distill.lambda_aa": 0.0},
    "KM": {"distill.lambda_logits": 0.0, "distill.lambda_aa": 0.0},
    "AA class_aware pool=1": _aa("class_aware", 1),
    "AA relation_kl pool=1": _aa("relation_kl", 1),
    "AA relation_kl pool=2": _aa("relation_kl", 2),
    "AA relation_kl pool=4": _aa("relation_kl", 4),
    "LM+KM+AA": {},
}
BASELINE = "no KD"


def _batch(cfg: Any, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    b, s = cfg.train.batch_size, cfg.data.size
    x = torch.randn(b, cfg.data.context_slices, s, s, generator=g)
    yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
    disc = ((yy - s / 2) ** 2 + (xx - s / 2) ** 2 < (s / 5) ** 2).long()
    return x.to(device), disc.expand(b, 1, s, s).contiguous().to(device)


def _step_runner(preset: str, overrides: dict[str, Any], device: torch.device,
                 ) -> tuple[Callable[[], object], Callable[[], object] | None, Any]:
    """``(step, teacher_forward, cfg)``: closures over one freshly built student/teacher pair."""
    from relkd_bench.config import load_config
    from relkd_bench.engine import build_role, student_loss, teacher_outputs
    from relkd_bench.losses import RelKDLoss

    cfg = load_config(preset, overrides)
    torch.manual_seed(0)
    student = build_role(cfg, "student").to(device).train()
    teacher = build_role(cfg, "teacher").to(device).eval().requires_grad_(False)
    objective = RelKDLoss(cfg.distill, student, teacher, cfg.student.name, cfg.data.num_classes).to(device)
    opt = torch.optim.AdamW([*student.parameters(), *objective.parameters()], lr=cfg.train.lr)
    x, y = _batch(cfg, device)
    zt, ft = teacher_outputs(teacher, objective, x) if objective.needs_teacher else (None, None)

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        loss, _ = student_loss(student, objective, x, y, zt, ft)
        loss.backward()
        opt.step()

    def teacher_forward() -> object:
        return teacher_outputs(teacher, objective, x)

    return step, (teacher_forward if objective.needs_teacher else None), cfg


def _rounds(runs: dict[str, Callable[[], object]], device: torch.device, repeats: int,
            ) -> dict[str, list[float]]:
    """Times of each run, measured round-robin (one call of each per round, after two warm-up rounds), so
    that a slow phase of the machine weighs on every variant alike rather than on whichever ran then."""
    for _ in range(2):
        for run in runs.values():
            run()
    times: dict[str, list[float]] = {label: [] for label in runs}
    for _ in range(repeats):
        for label, run in runs.items():
            times[label] += time_ms(run, device, 1, warmup=0)
    return times


def step_rows(preset: str, device: torch.device, repeats: int = 20,
              variants: dict[str, dict[str, Any]] = VARIANTS, base: dict[str, Any] | None = None,
              ) -> list[dict[str, Any]]:
    """One row per variant (provider ``step``) plus the teacher's forward (provider ``teacher_fwd``), each
    the median of ``repeats`` round-robin rounds. ``base``: overrides applied before each variant's (e.g. a
    smaller ``data.size`` for a test)."""
    runs: dict[str, Callable[[], object]] = {}
    kinds: dict[str, str] = {}
    cfg = None
    for label, overrides in variants.items():
        step, teacher_forward, cfg = _step_runner(preset, {**(base or {}), **overrides}, device)
        if teacher_forward is not None and "teacher_fwd" not in kinds.values():
            name = f"teacher {cfg.teacher.name}"
            runs[name], kinds[name] = teacher_forward, "teacher_fwd"
        runs[label], kinds[label] = step, "step"
    times = _rounds(runs, device, repeats)
    shape = (f"{preset}: {cfg.student.name} B={cfg.train.batch_size} "
             f"{cfg.data.context_slices}x{cfg.data.size}x{cfg.data.size}")
    rows = [{"op": "train_step", "shape": shape, "mode": label, "provider": kinds[label],
             "median_ms": statistics.median(t), "min_ms": min(t),
             "peak_extra_mb": peak_extra_mb(runs[label], device), "repeats": repeats}
            for label, t in times.items()]
    base_row = next((r for r in rows if r["mode"] == BASELINE), None)
    for r in rows:
        if base_row and r["provider"] == "step":
            r["overhead_vs_no_kd"] = r["median_ms"] / base_row["median_ms"] - 1.0
        print(f"{r['op']:16s} {r['shape']:26s} {r['mode']:22s} {r['provider']:11s} {r['median_ms']:10.2f} ms "
              f"{r['peak_extra_mb']:9.1f} MiB", flush=True)
    return rows


def profile_step(preset: str, label: str, device: torch.device, rows: int = 25) -> str:
    """The torch.profiler table (self time, top ``rows`` operators) of one step of variant ``label``."""
    from torch.profiler import ProfilerActivity, profile

    if label not in VARIANTS:
        raise ValueError(f"unknown step variant {label!r}; variants: {', '.join(VARIANTS)}")
    step, _, _ = _step_runner(preset, VARIANTS[label], device)
    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(3):
            step()
    key = "self_cuda_time_total" if device.type == "cuda" else "self_cpu_time_total"
    return prof.key_averages().table(sort_by=key, row_limit=rows)
