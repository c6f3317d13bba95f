"""The ensemble teacher (``teacher.members > 1``): independently trained copies, averaged.

A deep ensemble (Lakshminarayanan et al., "Simple and Scalable Predictive Uncertainty Estimation using
Deep Ensembles", NeurIPS 2017): member ``i`` is the single teacher of the same configuration trained with
seed ``s + 1000·i`` (``s``: ``teacher.seed`` when the config has it set, else ``train.seed``), so it
differs in initialization, slice order and augmentation draws. Member 0 is exactly the single teacher
(reused when already trained): comparing the single teacher with the ensemble costs only the extra
members. The offset of 1000 keeps members apart from the single teachers of nearby seeds, so the
ensembles of different seeds share no member.

Every member selects its epoch on source-site validation, as a single teacher does; the ensemble is then
scored once on the same source-site validation volumes (``val_dice`` in its checkpoint and in
``selection.json`` next to the members'), so that single versus ensemble can be decided there. The
held-out site is never read here.

The checkpoint is a plain model checkpoint of ``teacher_ensemble`` (:class:`~relkd_bench.models.
TeacherEnsemble`, mean logits and mean tap features), which :func:`~relkd_bench.engine.checkpoint.
load_model` rebuilds like any teacher.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from relkd_bench.config import ExperimentConfig, config_hash, teacher_hash
from relkd_bench.data.filelock import file_lock
from relkd_bench.engine.checkpoint import MODEL_FORMAT, load_model, save_atomic
from relkd_bench.engine.data import prepare_data
from relkd_bench.engine.metrics import evaluate_volumes, summarize
from relkd_bench.engine.runtime import setup_runtime
from relkd_bench.models import TeacherEnsemble

__all__ = ["MEMBER_SEED_STRIDE", "member_configs", "train_teacher_ensemble"]

MEMBER_SEED_STRIDE = 1000


def member_configs(cfg: ExperimentConfig) -> list[ExperimentConfig]:
    """The single-teacher configurations of the ``teacher.members`` members (member 0 first)."""
    t = cfg.teacher
    own_seed = getattr(t, "seed", None)  # teacher.seed, where the configuration has that key
    out = []
    for i in range(t.members):
        step = MEMBER_SEED_STRIDE * i
        if own_seed is not None:
            member = dataclasses.replace(cfg, teacher=dataclasses.replace(t, members=1, seed=own_seed + step))
        else:
            member = dataclasses.replace(cfg, teacher=dataclasses.replace(t, members=1),
                                         train=dataclasses.replace(cfg.train, seed=cfg.train.seed + step))
        out.append(member)
    return out


def train_teacher_ensemble(cfg: ExperimentConfig, workdir: Path | None = None, progress: bool = True) -> Path:
    """Train (or reuse) the members, assemble them, score the ensemble on source-site validation.

    The run folder is ``workdir/teacher-<name>-x<members>-<teacher_hash(cfg)>``; the members' folders
    are those of single teachers. Returns the ensemble's ``best.pt``.
    """
    from relkd_bench.engine.api import train_teacher  # api dispatches here: import lazily

    members = member_configs(cfg)
    paths = [train_teacher(m, workdir, progress) for m in members]
    t = cfg.teacher
    run_dir = Path(workdir or cfg.run.workdir) / f"teacher-{t.name}-x{t.members}-{teacher_hash(cfg)}"
    best = run_dir / "best.pt"
    with file_lock(run_dir / ".lock"):
        if best.is_file():
            return best
        device = setup_runtime(cfg.train)
        loaded = [load_model(p, device) for p in paths]
        ensemble = TeacherEnsemble([m for m, _ in loaded]).eval()
        run = prepare_data(cfg)
        rows = evaluate_volumes(ensemble, run.split.val_dataset(run.cache), device, cfg.train.eval_batch_size,
                                surface=False)
        val = summarize(rows, ("dice",))["dice"] if rows else math.nan
        selection = {"ensemble_val_dice": val, "members": [
            {"checkpoint": str(p), "val_dice": meta.get("val_dice"), "epoch": meta.get("epoch")}
            for p, (_, meta) in zip(paths, loaded, strict=True)]}
        meta0 = loaded[0][1]
        save_atomic({"format": MODEL_FORMAT, "role": "teacher",
                     "model": {"name": "teacher_ensemble",
                               "kwargs": {"members": t.name, "num_members": t.members, **t.kwargs},
                               "in_channels": meta0["model"]["in_channels"],
                               "num_classes": meta0["model"]["num_classes"]},
                     "data": meta0["data"], "config": cfg.to_dict(), "config_hash": config_hash(cfg),
                     "run_key": teacher_hash(cfg), "state_dict": ensemble.state_dict(), "epoch": -1,
                     "val_dice": val, "selection": selection}, best)
        (run_dir / "selection.json").write_text(json.dumps(selection, indent=1))
        if progress:
            print(f"[teacher] ensemble of {t.members}: source-validation Dice {val:.4f} (members "
                  + ", ".join(f"{m['val_dice']:.4f}" for m in selection["members"]) + ")")
        return best
