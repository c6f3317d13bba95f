"""The qualitative figure papers print: per held-out site, one mid-gland slice with the ground truth and
the contours of the teacher, the no-KD student and the best distilled student.

The models are the study's own checkpoints (the ``checkpoint`` attribute of each trial and the teacher
its student was trained with); the slice is the middle gland slice of the held-out case whose no-KD
Dice is the site's median, so the figure shows a typical case, not the best one. "Best KD" is the
method with the highest mean held-out Dice at that site: a description of the table, not a selection.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from relkd_bench.ablate.spec import TEACHER  # noqa: E402
from relkd_bench.report.stats import is_reference  # noqa: E402

__all__ = ["qualitative_figure"]

_COLOURS = {"ground truth": "yellow", "teacher": "deepskyblue", "no KD": "orangered", "best KD": "lime"}


def _finite(v: Any) -> bool:
    return isinstance(v, int | float) and math.isfinite(v)


def _pick(done: Sequence[dict], site: str) -> tuple[dict, dict, str] | None:
    """The no-KD trial and the best-KD trial of ``site`` with the same (lowest) seed, and the KD method."""
    here = [r for r in done if str(r["heldout"]) == site and _finite(r.get("heldout_dice"))]
    means: dict[str, list[float]] = {}
    for r in here:
        means.setdefault(str(r["method"]), []).append(float(r["heldout_dice"]))
    kd = {m: statistics.fmean(v) for m, v in means.items() if not is_reference(m) and m != TEACHER}
    if not any(is_reference(m) for m in means) or not kd:
        return None
    best = max(kd, key=kd.get)
    for seed in sorted({str(r["seed"]) for r in here}):
        none = [r for r in here if is_reference(r["method"]) and str(r["seed"]) == seed]
        kd_run = [r for r in here if r["method"] == best and str(r["seed"]) == seed]
        if none and kd_run:
            return none[0], kd_run[0], best
    return None


def _teacher_checkpoint(student_ckpt: Path) -> Path | None:
    """The teacher a student was distilled from: its run config names the teacher's run folder."""
    from relkd_bench.config import load_config, teacher_hash

    cfg_path = student_ckpt.parent / "config.json"
    if not cfg_path.is_file():
        return None
    cfg = load_config(json.loads(cfg_path.read_text()))
    path = student_ckpt.parent.parent / f"teacher-{cfg.teacher.name}-{teacher_hash(cfg)}" / "best.pt"
    return path if path.is_file() else None


def _predict(model: torch.nn.Module, image: np.ndarray, index: int, k: int) -> np.ndarray:
    from relkd_bench.data.preprocess import stack_context

    x = torch.from_numpy(stack_context(image, index, k))[None]
    with torch.no_grad():
        return model(x).argmax(1)[0].numpy()


def _panel(ax: Any, student_ckpt: Path, kd_ckpt: Path, site: str, method: str, case_dice: dict) -> None:
    from relkd_bench.config import load_config
    from relkd_bench.data import PreprocessCache, scan_collection
    from relkd_bench.engine import data_root, load_model
    from relkd_bench.engine.data import cache_dir, preprocess_config

    cfg = load_config(json.loads((student_ckpt.parent / "config.json").read_text()))
    uid = sorted(case_dice, key=case_dice.get)[len(case_dice) // 2]  # the median no-KD case
    ref = next(c for c in scan_collection(data_root(cfg))[0] if c.uid == uid)
    prep = PreprocessCache(preprocess_config(cfg), cache_dir(cfg)).get(ref)
    gland = np.flatnonzero(prep.mask.reshape(prep.mask.shape[0], -1).any(1))
    index = int(gland[len(gland) // 2])
    ax.imshow(prep.image[index], cmap="gray")
    masks = {"ground truth": np.asarray(prep.mask[index])}
    models = {"no KD": student_ckpt, "best KD": kd_ckpt, "teacher": _teacher_checkpoint(kd_ckpt)}
    for label, path in models.items():
        if path is not None:
            model = load_model(path)[0]
            masks[label] = _predict(model, np.asarray(prep.image), index, cfg.data.context_slices)
    for label, m in masks.items():
        if m.any():
            ax.contour(m, levels=[0.5], colors=_COLOURS[label], linewidths=1.0)
    ax.set_title(f"held-out {site}: {uid.split('/')[-1]}, slice {index}\nbest KD = {method}", fontsize=8)
    ax.axis("off")


def qualitative_figure(rows: Sequence[dict[str, Any]], path: Path, prov: str) -> Path | None:
    """Draw the figure when the trials' checkpoints are on disk; ``None`` (nothing drawn) otherwise."""
    from relkd_bench.report.figures import _save
    from relkd_bench.report.stats import case_scores

    done = [r for r in rows if r["state"] == "COMPLETE" and r.get("checkpoint")]
    panels = []
    for site in sorted({str(r["heldout"]) for r in done}):
        picked = _pick(done, site)
        if picked is None:
            continue
        none, kd, method = picked
        ckpts = (Path(str(none["checkpoint"])), Path(str(kd["checkpoint"])))
        scores = case_scores(none)
        if all(p.is_file() for p in ckpts) and scores:
            panels.append((ckpts, site, method, scores))
    if not panels:
        return None
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.6), squeeze=False)
    for ax, (ckpts, site, method, scores) in zip(axes[0], panels):
        _panel(ax, ckpts[0], ckpts[1], site, method, scores)
    handles = [plt.Line2D([], [], color=c, label=k) for k, c in _COLOURS.items()]
    fig.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.04), ncol=4, fontsize=8,
               frameon=False)
    return _save(fig, path, prov)
