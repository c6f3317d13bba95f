"""Per-volume 3D evaluation: Dice, HD95 (mm) and ASSD (mm) with MONAI, after keeping the largest
connected component of the prediction (of each class).

Binary task (2 classes): the metrics of the foreground (the gland). More classes (e.g. MSD zones):
per foreground class ``c`` the keys ``dice_c<c>``, ``hd95_c<c>``, ``assd_c<c>``, and the headline
``dice``/``hd95``/``assd`` are their means over the foreground classes (``hd95``/``assd`` ``nan`` when
any class's is).

Empty cases (defined, never a crash):

* prediction and ground truth both empty: Dice 1, HD95 0, ASSD 0;
* exactly one of them empty: Dice 0, HD95 and ASSD ``nan`` — undefined surface distances, excluded
  from the means (:func:`summarize` reports how many were excluded as ``n_surface_undefined``).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterable, Sequence

import numpy as np
import torch
from monai.metrics import compute_average_surface_distance, compute_dice, compute_hausdorff_distance
from monai.transforms import KeepLargestConnectedComponent
from torch.utils.data import Dataset

__all__ = ["METRICS", "class_keys", "evaluate_volumes", "per_site", "predict_volume", "summarize",
           "volume_metrics"]

_LCC = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False)
METRICS = ("dice", "hd95", "assd")


def _onehot(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x == 0, x == 1]).unsqueeze(0).float()  # [1, 2, D, H, W]


def volume_metrics(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float], keep_lcc: bool = True,
                   surface: bool = True, num_classes: int = 2) -> dict[str, float]:
    """Metrics of one volume.

    Args:
        pred, gt: ``[D, H, W]`` label volumes (binary: any value > 0 is foreground).
        spacing: voxel size ``(sz, sy, sx)`` in mm, in ``[D, H, W]`` order.
        keep_lcc: keep only the largest connected component of ``pred`` (of each class) first.
        surface: also compute HD95 and ASSD (else they are ``nan``).
        num_classes: classes of the task, background included.

    Returns:
        ``{"dice", "hd95", "assd"}``, plus the per-class keys for more than 2 classes (module doc).
    """
    if num_classes > 2:
        return _multiclass_metrics(pred, gt, spacing, keep_lcc, surface, num_classes)
    pred = (pred.detach().cpu() > 0).to(torch.uint8)
    gt = (gt.detach().cpu() > 0).to(torch.uint8)
    if keep_lcc and pred.any():
        pred = torch.as_tensor(_LCC(pred[None]))[0].to(torch.uint8)
    return _binary_metrics(pred, gt, spacing, surface)


def _multiclass_metrics(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float], keep_lcc: bool,
                        surface: bool, num_classes: int) -> dict[str, float]:
    classes = list(range(1, num_classes))
    pred = pred.detach().cpu().to(torch.uint8)
    gt = gt.detach().cpu().to(torch.uint8)
    if keep_lcc and pred.any():
        lcc = KeepLargestConnectedComponent(applied_labels=classes, is_onehot=False, independent=True)
        pred = torch.as_tensor(lcc(pred[None]))[0].to(torch.uint8)
    out: dict[str, float] = {}
    for c in classes:
        m = _binary_metrics((pred == c).to(torch.uint8), (gt == c).to(torch.uint8), spacing, surface)
        out.update({f"{k}_c{c}": v for k, v in m.items()})
    for k in METRICS:
        out[k] = float(np.mean([out[f"{k}_c{c}"] for c in classes]))
    return out


def _binary_metrics(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float],
                    surface: bool) -> dict[str, float]:
    """Dice, HD95, ASSD of binary uint8 volumes ``[D, H, W]`` (empty cases: module doc)."""
    p_any, g_any = bool(pred.any()), bool(gt.any())
    if not p_any and not g_any:
        return {"dice": 1.0, "hd95": 0.0, "assd": 0.0}
    if not p_any or not g_any:
        return {"dice": 0.0, "hd95": math.nan, "assd": math.nan}
    yp, yt = _onehot(pred), _onehot(gt)
    dice = float(compute_dice(yp, yt, include_background=False).reshape(-1)[0])
    hd = assd = math.nan
    if surface:
        sp = [float(s) for s in spacing]
        with warnings.catch_warnings():
            # MONAI 1.5+ warns about its own internal get_mask_edges call on every use; nothing to act on.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*", category=FutureWarning)
            hd = float(compute_hausdorff_distance(yp, yt, include_background=False, percentile=95,
                                                  spacing=sp).reshape(-1)[0])
            assd = float(compute_average_surface_distance(yp, yt, include_background=False, symmetric=True,
                                                          spacing=sp).reshape(-1)[0])
    return {"dice": dice, "hd95": hd, "assd": assd}


@torch.no_grad()
def predict_volume(model: torch.nn.Module, image: torch.Tensor, device: torch.device, batch_size: int = 32,
                   amp: bool = False) -> torch.Tensor:
    """Slice-wise prediction of a volume ``image [D, C, H, W]`` → labels ``[D, H, W]`` (CPU, int64)."""
    out = []
    for i in range(0, image.shape[0], batch_size):
        x = image[i : i + batch_size].to(device, non_blocking=True)
        with torch.autocast(device.type, enabled=amp and device.type == "cuda"):
            logits = model(x)
        out.append(logits.argmax(1).cpu())
    return torch.cat(out)


def evaluate_volumes(model: torch.nn.Module, volumes: Dataset, device: torch.device, batch_size: int = 32,
                     amp: bool = False, surface: bool = True, keep_lcc: bool = True) -> list[dict]:
    """Per-case metrics of ``model`` (put in eval mode) over a :class:`~relkd_bench.data.VolumeDataset`;
    the task's classes are the model's outputs (``model.num_classes``).

    Returns:
        One dict per case: ``uid, site, case_id, dice, hd95, assd`` (+ per-class keys, module doc).
    """
    num_classes = getattr(model, "num_classes", 2)
    was_training = model.training
    model.eval()
    rows = []
    try:
        for i in range(len(volumes)):
            item = volumes[i]
            pred = predict_volume(model, item["image"], device, batch_size, amp)
            m = volume_metrics(pred, item["label"], item["spacing"], keep_lcc=keep_lcc, surface=surface,
                               num_classes=num_classes)
            rows.append({"uid": item["uid"], "site": item["site"], "case_id": item["case_id"], **m})
    finally:
        model.train(was_training)
    return rows


def class_keys(rows: Iterable[dict]) -> list[str]:
    """The per-class metric keys (``dice_c1``, ``hd95_c1``, …) present in ``rows``, in first-seen order."""
    seen: dict[str, None] = {}
    for r in rows:
        seen.update((k, None) for k in r if k.split("_c")[0] in METRICS and k not in METRICS)
    return list(seen)


def summarize(rows: Iterable[dict], keys: Sequence[str] | None = None) -> dict[str, float]:
    """Means over cases (``nan`` values excluded) plus ``n`` and ``n_surface_undefined``.

    ``keys``: the metrics to average; ``None`` → ``dice, hd95, assd`` and any per-class keys.
    """
    rows = list(rows)
    if keys is None:
        keys = (*METRICS, *class_keys(rows))
    out: dict[str, float] = {}
    for k in keys:
        vals = np.array([r[k] for r in rows], dtype=np.float64)
        ok = vals[~np.isnan(vals)]
        out[k] = float(ok.mean()) if ok.size else math.nan
    out["n"] = len(rows)
    out["n_surface_undefined"] = sum(1 for r in rows if math.isnan(r.get("hd95", 0.0)))
    return out


def per_site(rows: Iterable[dict]) -> dict[str, dict[str, float]]:
    """:func:`summarize` per site."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        groups.setdefault(r["site"], []).append(r)
    return {s: summarize(g) for s, g in groups.items()}
