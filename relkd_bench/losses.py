"""Distillation losses as ``nn.Module`` s, built by name from a registry (torchdistill style).

=================  ==========================================================================
name               module
=================  ==========================================================================
``dice_ce``        MONAI ``DiceCELoss`` on logits ``[B, K, H, W]`` and labels ``[B, 1, H, W]``
``kd_logits``      :class:`LogitsKD` (LM, ``relkd_bench.ops.kd_logits_loss``)
``kmm``            :class:`KernelMatrixLoss` (KMM, ``ops.gram_loss``, 1×1 adapter when Cs ≠ Ct)
``aam_cosine``     :class:`AffinityLoss` variant ``cosine`` (``ops.affinity_loss``, no labels)
``aam_class_aware``:class:`AffinityLoss` variant ``class_aware`` (intra/inter pair weights)
``aam_relation_kl``:class:`AffinityLoss` variant ``relation_kl`` (``ops.relation_kl_loss``)
``relkd``          :class:`RelKDLoss`: ``L_seg + λ1·L_logits + λ2·L_KM + λ3·L_AA``
=================  ==========================================================================

Default layer pairs (student tap, teacher tap), see :func:`default_pairs`: KMM matches the deepest
encoder features (``encoder``/``encoder``: style of the bottleneck; sizes may differ, a 1×1 adapter maps
student channels to the teacher's); AAM matches the stride-4 decoder features (``decoder``/``decoder``,
same H, W for ENet/ERFNet and every teacher). ESPNet's ``decoder`` tap is its 2-class combination, so
ESPNet uses ``level2`` (stride 4) for AAM.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

from relkd_bench import ops
from relkd_bench.config import DistillConfig

__all__ = [
    "AffinityLoss",
    "KernelMatrixLoss",
    "LogitsKD",
    "RelKDLoss",
    "aam_pool",
    "align_pair",
    "build_loss",
    "default_pairs",
    "downsample_labels",
    "list_losses",
    "register_loss",
]

_LOSSES: dict[str, Callable[..., nn.Module]] = {}


def register_loss(name: str) -> Callable:
    """Decorator registering a loss constructor under ``name``."""

    def deco(fn: Callable) -> Callable:
        if name in _LOSSES:
            raise ValueError(f"loss {name!r} is already registered")
        _LOSSES[name] = fn
        return fn

    return deco


def build_loss(name: str, **kwargs) -> nn.Module:
    """Instantiate the loss registered as ``name``."""
    if name not in _LOSSES:
        raise ValueError(f"unknown loss {name!r}; known losses: {', '.join(list_losses())}")
    return _LOSSES[name](**kwargs)


def list_losses() -> list[str]:
    """Registered loss names."""
    return sorted(_LOSSES)


# -- helpers -----------------------------------------------------------------------------------
def _resize(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    if x.shape[-2] >= size[0] and x.shape[-1] >= size[1]:
        return F.adaptive_avg_pool2d(x, size)  # shrinking: area average
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def align_pair(fs: torch.Tensor, ft: torch.Tensor, mode: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Bring student ``[B, Cs, Hs, Ws]`` and teacher ``[B, Ct, Ht, Wt]`` features to one H, W.

    Modes: ``resize_teacher`` (teacher to the student's size), ``resize_student`` (the reverse),
    ``pool`` (average-pool the larger to the smaller size), ``none`` (unchanged). Shrinking uses
    adaptive average pooling, enlarging bilinear interpolation.
    """
    if mode == "none" or fs.shape[-2:] == ft.shape[-2:]:
        return fs, ft
    if mode == "resize_teacher":
        return fs, _resize(ft, fs.shape[-2:])
    if mode == "resize_student":
        return _resize(fs, ft.shape[-2:]), ft
    if mode == "pool":
        size = (min(fs.shape[-2], ft.shape[-2]), min(fs.shape[-1], ft.shape[-1]))
        return _resize(fs, size), _resize(ft, size)
    raise ValueError(f"unknown align mode {mode!r}")


def aam_pool(x: torch.Tensor, pool: int) -> torch.Tensor:
    """The one AAM pooling rule, for every variant: average pooling with kernel = stride = ``pool`` and
    ``ceil_mode=True``, so an ``H×W`` map becomes ``ceil(H/pool)×ceil(W/pool)`` and a partial window at
    the bottom/right edge averages the pixels it covers. It is the rule ``ops.relation_kl_loss(pool=)``
    applies inside the op; ``cosine`` and ``class_aware`` pool here with the same call."""
    return x if pool == 1 else F.avg_pool2d(x, pool, stride=pool, ceil_mode=True)


def downsample_labels(labels: torch.Tensor, size: Sequence[int], num_classes: int,
                      pool: int = 1) -> torch.Tensor:
    """Majority-vote down-sampling of integer labels ``[B, H, W]`` or ``[B, 1, H, W]`` → ``[B, h, w]``.

    Class fractions are area-averaged to ``size``, then over the :func:`aam_pool` windows of ``pool``
    (the grid the pooled features have), and the majority class of each cell is kept.
    """
    if labels.ndim == 4:
        labels = labels[:, 0]
    if tuple(labels.shape[-2:]) == tuple(size) and pool == 1:
        return labels.long()
    onehot = F.one_hot(labels.long(), num_classes).permute(0, 3, 1, 2).float()
    return aam_pool(F.adaptive_avg_pool2d(onehot, tuple(size)), pool).argmax(1)


def default_pairs(student: str, kind: str) -> tuple[tuple[str, str], ...]:
    """Default ``(student_tap, teacher_tap)`` pairs for ``kind`` in ``{"km", "aa"}`` (see module doc)."""
    if kind == "km":
        return (("encoder", "encoder"),)
    if kind == "aa":
        return (("level2", "decoder"),) if student.lower() == "espnet" else (("decoder", "decoder"),)
    raise ValueError(f"kind must be 'km' or 'aa', got {kind!r}")


# -- the terms ---------------------------------------------------------------------------------
@register_loss("dice_ce")
def _dice_ce(**kwargs) -> nn.Module:
    """MONAI DiceCELoss on logits ``[B, K, H, W]`` and integer labels ``[B, 1, H, W]``."""
    return DiceCELoss(to_onehot_y=True, softmax=True, **kwargs)


@register_loss("kd_logits")
class LogitsKD(nn.Module):
    """Logits Module: ``ops.kd_logits_loss(zs, zt, T)`` on ``[B, K, H, W]`` logits (zt detached)."""

    def __init__(self, temperature: float = 4.0) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, zs: torch.Tensor, zt: torch.Tensor) -> torch.Tensor:
        return ops.kd_logits_loss(zs.float(), zt.detach().float(), self.temperature)


@register_loss("kmm")
class KernelMatrixLoss(nn.Module):
    """Kernel Matrix Module: Gram (channel-style) matching ``ops.gram_loss``.

    A trainable 1×1 conv maps student features ``[B, Cs, Hs, Ws]`` to ``Ct`` channels when
    ``Cs != Ct``; ``align`` optionally resizes the pair to one H, W (Grams allow different sizes).
    """

    def __init__(self, student_channels: int, teacher_channels: int, align: str = "none") -> None:
        super().__init__()
        self.align = align
        self.adapter = (nn.Conv2d(student_channels, teacher_channels, 1, bias=False)
                        if student_channels != teacher_channels else nn.Identity())

    def forward(self, fs: torch.Tensor, ft: torch.Tensor) -> torch.Tensor:
        fs = self.adapter(fs.float())
        fs, ft = align_pair(fs, ft.detach().float(), self.align)
        return ops.gram_loss(fs, ft)


class AffinityLoss(nn.Module):
    """Adaptive Affinity Module on features ``fs [B, Cs, Hs, Ws]``, ``ft [B, Ct, Ht, Wt]``.

    The pair is aligned to one H, W (``align``), then average-pooled by ``pool`` with one rule for every
    variant (:func:`aam_pool`: ceil mode, ``ceil(H/pool)×ceil(W/pool)`` cells, partial edge windows
    averaged over the pixels they cover):

    * ``cosine``: ``ops.affinity_loss(fs, ft)`` (global cosine affinities);
    * ``class_aware``: the same with labels ``[B, h, w]`` (majority-down-sampled ground truth or teacher
      argmax, chosen by the caller) and ``intra_weight``/``inter_weight``;
    * ``relation_kl``: ``ops.relation_kl_loss(fs, ft, temperature, pool)`` (softmax pixel relations);
      raises at construction when the op is not available.
    """

    def __init__(self, variant: str = "class_aware", pool: int = 1, align: str = "resize_teacher",
                 intra_weight: float = 1.0, inter_weight: float = 1.0, temperature: float = 1.0,
                 num_classes: int = 2) -> None:
        super().__init__()
        if variant not in ("cosine", "class_aware", "relation_kl"):
            raise ValueError(f"unknown AAM variant {variant!r}")
        if variant == "relation_kl" and not hasattr(ops, "relation_kl_loss"):
            raise RuntimeError("AAM variant 'relation_kl' needs the op relkd_bench.ops.relation_kl_loss, "
                               "which this build does not provide; choose distill.aa_variant=cosine or "
                               "class_aware, or update relkd_bench.ops")
        if align == "none":
            raise ValueError("AAM needs equal H, W: align must be resize_teacher, resize_student or pool")
        self.variant, self.pool, self.align = variant, int(pool), align
        self.intra_weight, self.inter_weight = float(intra_weight), float(inter_weight)
        self.temperature, self.num_classes = float(temperature), num_classes

    @property
    def needs_labels(self) -> bool:
        return self.variant == "class_aware"

    def forward(self, fs: torch.Tensor, ft: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels``: integer ``[B, H, W]`` / ``[B, 1, H, W]`` at any resolution (``class_aware`` only)."""
        fs, ft = align_pair(fs.float(), ft.detach().float(), self.align)
        if self.variant == "relation_kl":  # the op pools with the aam_pool rule itself
            return ops.relation_kl_loss(fs, ft, temperature=self.temperature, pool=self.pool)
        if self.variant == "cosine":
            return ops.affinity_loss(aam_pool(fs, self.pool), aam_pool(ft, self.pool))
        if labels is None:
            raise ValueError("class_aware AAM needs labels")
        y = downsample_labels(labels, fs.shape[-2:], self.num_classes, self.pool)
        return ops.affinity_loss(aam_pool(fs, self.pool), aam_pool(ft, self.pool), y, self.intra_weight,
                                 self.inter_weight, num_classes=self.num_classes)


for _v in ("cosine", "class_aware", "relation_kl"):
    register_loss(f"aam_{_v}")(lambda _v=_v, **kw: AffinityLoss(variant=_v, **kw))


@register_loss("relkd")
class RelKDLoss(nn.Module):
    """``L = L_seg + λ1·L_logits + λ2·L_KM + λ3·L_AA`` (DESIGN §1). A λ of 0 builds and computes nothing.

    Args:
        cfg: the ``distill`` section.
        student, teacher: the models (for tap channels); ``teacher`` may be ``None`` when all λ = 0.
        student_name: registry name of the student (for default pairs).

    Attributes:
        student_taps, teacher_taps: taps to request from ``forward_features`` (empty: plain forward).
        needs_teacher: whether a teacher forward pass is needed at all.
    """

    def __init__(self, cfg: DistillConfig, student: nn.Module, teacher: nn.Module | None,
                 student_name: str, num_classes: int = 2) -> None:
        super().__init__()
        self.cfg = cfg
        self.num_classes = num_classes
        self.seg = build_loss("dice_ce")
        self.logits = build_loss("kd_logits", temperature=cfg.temperature) if cfg.lambda_logits > 0 else None
        km_pairs = tuple(cfg.km_pairs) or default_pairs(student_name, "km")
        aa_pairs = tuple(cfg.aa_pairs) or default_pairs(student_name, "aa")
        self.km_pairs = km_pairs if cfg.lambda_km > 0 else ()
        self.aa_pairs = aa_pairs if cfg.lambda_aa > 0 else ()
        if cfg.enabled and teacher is None:
            raise ValueError("distillation terms are enabled (some lambda > 0) but no teacher was given")
        self.km = nn.ModuleList(
            build_loss("kmm", student_channels=student.feature_channels(s),
                       teacher_channels=teacher.feature_channels(t), align=cfg.km_align)
            for s, t in self.km_pairs)
        self.aa = nn.ModuleList(
            build_loss(f"aam_{cfg.aa_variant}", pool=cfg.aa_pool, align=cfg.aa_align,
                       intra_weight=cfg.intra_weight, inter_weight=cfg.inter_weight,
                       temperature=cfg.aa_temperature, num_classes=num_classes)
            for _ in self.aa_pairs)
        self.student_taps = tuple(dict.fromkeys(s for s, _ in self.km_pairs + self.aa_pairs))
        self.teacher_taps = tuple(dict.fromkeys(t for _, t in self.km_pairs + self.aa_pairs))
        self.needs_teacher = cfg.enabled

    def forward(self, zs: torch.Tensor, labels: torch.Tensor,
                feats_s: Mapping[str, torch.Tensor] | None = None, zt: torch.Tensor | None = None,
                feats_t: Mapping[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss and its parts.

        Args:
            zs: student logits ``[B, K, H, W]``; labels: ``[B, 1, H, W]`` int.
            feats_s, feats_t: tap features of student/teacher (keys from ``student_taps``/``teacher_taps``).
            zt: teacher logits ``[B, K, H, W]`` (needed when λ1 > 0 or AAM labels come from the teacher).

        Returns:
            ``(scalar loss, {"seg": ..., "logits": ..., "km": ..., "aa": ...})`` (parts as floats,
            unweighted; disabled terms absent).
        """
        c = self.cfg
        seg = self.seg(zs.float(), labels)
        total, parts = seg, {"seg": float(seg.detach())}
        if self.logits is not None:
            lm = self.logits(zs, zt)
            total = total + c.lambda_logits * lm
            parts["logits"] = float(lm.detach())
        if len(self.km):
            km = sum(m(feats_s[s], feats_t[t]) for m, (s, t) in zip(self.km, self.km_pairs)) / len(self.km)
            total = total + c.lambda_km * km
            parts["km"] = float(km.detach())
        if len(self.aa):
            y = None
            if c.aa_variant == "class_aware":
                y = labels if c.aa_labels == "gt" else zt.detach().argmax(1)
            aa = sum(m(feats_s[s], feats_t[t], y) for m, (s, t) in zip(self.aa, self.aa_pairs)) / len(self.aa)
            total = total + c.lambda_aa * aa
            parts["aa"] = float(aa.detach())
        return total, parts
