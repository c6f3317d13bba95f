"""Training, distillation and evaluation with the leave-one-site-out protocol.

Typical use::

    from relkd_bench.config import load_config
    from relkd_bench.engine import train_student, train_teacher

    cfg = load_config("quick")
    teacher = train_teacher(cfg)                      # best-val checkpoint; reused when already trained
    result = train_student(cfg, teacher)              # RelKD student; held-out site scored once, at the end
    base = train_student(load_config("quick", {"distill.lambda_logits": 0, "distill.lambda_km": 0,
                                               "distill.lambda_aa": 0}), None)   # no-KD baseline
    result.heldout["dice"], result.to_dict()

Run folders hold ``last.pt`` (training state, resumable), ``best.pt`` (best source-validation Dice),
``log.csv`` (one row per epoch), ``config.json`` and, for students, ``result.json``. Checkpoints are
written atomically and load with ``torch.load(weights_only=True)``.
"""

from relkd_bench.engine.api import (
    RunResult,
    build_role,
    evaluate_checkpoint,
    student_loss,
    teacher_outputs,
    train_student,
    train_teacher,
)
from relkd_bench.engine.checkpoint import CheckpointError, load_checkpoint, load_model, save_atomic
from relkd_bench.engine.data import RunData, data_root, make_train_loader, prepare_data
from relkd_bench.engine.metrics import evaluate_volumes, per_site, predict_volume, summarize, volume_metrics
from relkd_bench.engine.runtime import backend_name, resolve_device, seed_everything, setup_runtime

__all__ = [
    "CheckpointError",
    "RunData",
    "RunResult",
    "backend_name",
    "build_role",
    "data_root",
    "evaluate_checkpoint",
    "evaluate_volumes",
    "load_checkpoint",
    "load_model",
    "make_train_loader",
    "per_site",
    "predict_volume",
    "prepare_data",
    "resolve_device",
    "save_atomic",
    "seed_everything",
    "setup_runtime",
    "student_loss",
    "summarize",
    "teacher_outputs",
    "train_student",
    "train_teacher",
    "volume_metrics",
]
