"""Per-volume 3D evaluation: Dice, HD95 (mm) and ASSD (mm) with MONAI, after keeping the largest
connected component of the prediction.

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

__all__ = ["evaluate_volumes", "per_site", "predict_volume", "summarize", "volume_metrics"]

_LCC = KeepLargestConnectedComponent(applied_labels=[1], is_onehot=False)


def _onehot(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x == 0, x == 1]).unsqueeze(0).float()  # [1, 2, D, H, W]


def volume_metrics(pred: torch.Tensor, gt: torch.Tensor, spacing: Sequence[float], keep_lcc: bool = True,
                   surface: bool = True) -> dict[str, float]:
    """Metrics of one volume.

    Args:
        pred, gt: binary ``[D, H, W]`` label volumes.
        spacing: voxel size ``(sz, sy, sx)`` in mm, in ``[D, H, W]`` order.
        keep_lcc: keep only the largest connected component of ``pred`` first.
        surface: also compute HD95 and ASSD (else they are ``nan``).

    Returns:
        ``{"dice", "hd95", "assd"}`` (see the module doc for empty cases).
    """
    pred = (pred.detach().cpu() > 0).to(torch.uint8)
    gt = (gt.detach().cpu() > 0).to(torch.uint8)
    if keep_lcc and pred.any():
        pred = torch.as_tensor(_LCC(pred[None]))[0].to(torch.uint8)
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
    """Per-case metrics of ``model`` (put in eval mode) over a :class:`~relkd_bench.data.VolumeDataset`.

    Returns:
        One dict per case: ``uid, site, case_id, dice, hd95, assd``.
    """
    was_training = model.training
    model.eval()
    rows = []
    try:
        for i in range(len(volumes)):
            item = volumes[i]
            pred = predict_volume(model, item["image"], device, batch_size, amp)
            m = volume_metrics(pred, item["label"], item["spacing"], keep_lcc=keep_lcc, surface=surface)
            rows.append({"uid": item["uid"], "site": item["site"], "case_id": item["case_id"], **m})
    finally:
        model.train(was_training)
    return rows


def summarize(rows: Iterable[dict], keys: Sequence[str] = ("dice", "hd95", "assd")) -> dict[str, float]:
    """Means over cases (``nan`` values excluded) plus ``n`` and ``n_surface_undefined``."""
    rows = list(rows)
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
