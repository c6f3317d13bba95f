"""Distillation losses as ``nn.Module`` s, built by name from a registry (torchdistill style).

=================  ==========================================================================
name               module
=================  ==========================================================================
``dice_ce``        MONAI ``DiceCELoss`` on logits ``[B, K, H, W]`` and labels ``[B, 1, H, W]``
``kd_logits``      :class:`LogitsKD` (LM, ``relkd_bench.ops.kd_logits_loss``; pixel mean or
                   ``class_balanced``: :func:`class_balanced_kd`)
``cwd``            :class:`ChannelWiseKD` (CWD, Shu et al. ICCV 2021; ``ops.cwd_loss``)
``kmm``            :class:`KernelMatrixLoss` (KMM, ``ops.gram_loss``, 1×1 adapter when Cs ≠ Ct)
``aam_cosine``     :class:`AffinityLoss` variant ``cosine`` (``ops.affinity_loss``, no labels)
``aam_class_aware``:class:`AffinityLoss` variant ``class_aware`` (intra/inter pair weights)
``aam_relation_kl``:class:`AffinityLoss` variant ``relation_kl`` (``ops.relation_kl_loss``; CIRKD's
                   in-image pixel-to-pixel relations, Yang et al. CVPR 2022)
``skd_pairwise``   :class:`PairwiseSKD` (SKD pair-wise, Liu et al. CVPR 2019; also ``aam_skd``)
``relkd``          :class:`RelKDLoss`: ``L_seg + λ1·L_logits + λ2·L_KM + λ3·L_AA``
=================  ==========================================================================

Default layer pairs (student tap, teacher tap), see :func:`default_pairs`: KMM matches the deepest
encoder features (``encoder``/``encoder``: style of the bottleneck; sizes may differ, a 1×1 adapter maps
student channels to the teacher's); AAM matches the stride-4 decoder features (``decoder``/``decoder``,
same H, W for ENet/ERFNet and every teacher). ESPNet's ``decoder`` tap is its 2-class combination, so
ESPNet uses ``level2`` (stride 4) for AAM.

Diagnostics: ``RELKD_DIAGNOSE=1`` adds ``diag_*`` parts to :class:`RelKDLoss` (the trainer averages
them per epoch into ``log.csv``): what each term does to the foreground and background logits, the
predicted foreground fractions, the teacher's logit scale, and exactly-zero AAM feature vectors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceCELoss
from torch import nn

from relkd_bench import ops
from relkd_bench.config import DistillConfig

__all__ = [
    "DIAGNOSE_ENV",
    "AffinityLoss",
    "ChannelWiseKD",
    "KernelMatrixLoss",
    "LogitsKD",
    "PairwiseSKD",
    "RelKDLoss",
    "aam_pool",
    "align_pair",
    "build_loss",
    "class_balanced_kd",
    "cwd_loss",
    "default_pairs",
    "diagnostics_requested",
    "downsample_labels",
    "feature_diagnostics",
    "list_losses",
    "logit_diagnostics",
    "register_loss",
    "skd_nodes",
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


# -- opt-in training diagnostics ---------------------------------------------------------------
DIAGNOSE_ENV = "RELKD_DIAGNOSE"


def diagnostics_requested() -> bool:
    """``RELKD_DIAGNOSE=1`` turns on the ``diag_*`` parts of :class:`RelKDLoss` (``0``/unset: off).

    The diagnostics read gradients with ``torch.autograd.grad`` (no parameter ``.grad`` is touched, no
    random numbers are drawn), so a diagnosed run trains exactly like a plain one; it is slower.
    """
    value = os.environ.get(DIAGNOSE_ENV, "0")
    if value not in ("0", "1"):
        raise ValueError(f"{DIAGNOSE_ENV} must be 0 or 1, got {value!r}")
    return value == "1"


def logit_diagnostics(zs: torch.Tensor, labels: torch.Tensor, zt: torch.Tensor | None,
                      terms: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """What each loss term does to the student's foreground/background logits, for a binary task.

    Args:
        zs: student logits ``[B, 2, H, W]`` (in the graph of every term); zt: teacher logits or None.
        labels: ground truth ``[B, 1, H, W]`` (1 = foreground).
        terms: name → weighted scalar term (as it enters the total loss).

    Returns (floats):
        ``diag_fg_gt``, ``diag_fg_s``, ``diag_fg_t``: foreground fraction of the ground truth, of the
        student's and the teacher's argmax; ``diag_gap_{s,t}_{fg,bg}``: mean logit gap
        ``z_fg − z_bg`` over ground-truth foreground / background pixels; ``diag_tscale``: the teacher's
        mean ``|z_fg − z_bg|``; per term ``diag_push_<term>_{fg,bg}``: ``−Σ ∂term/∂gap`` over the
        ground-truth foreground / background pixels (> 0: gradient descent raises the gap, i.e. pushes
        towards foreground) and ``diag_gnorm_<term>``: ``‖∂term/∂zs‖₂``.
    """
    fg = labels[:, 0] > 0
    bg = ~fg
    gap_s = (zs[:, 1] - zs[:, 0]).detach().float()
    out = {"diag_fg_gt": float(fg.float().mean()), "diag_fg_s": float((gap_s > 0).float().mean()),
           "diag_gap_s_fg": _masked_mean(gap_s, fg), "diag_gap_s_bg": _masked_mean(gap_s, bg)}
    if zt is not None:
        gap_t = (zt[:, 1] - zt[:, 0]).detach().float()
        out.update({"diag_fg_t": float((gap_t > 0).float().mean()), "diag_gap_t_fg": _masked_mean(gap_t, fg),
                    "diag_gap_t_bg": _masked_mean(gap_t, bg), "diag_tscale": float(gap_t.abs().mean())})
    for name, term in terms.items():
        (g,) = torch.autograd.grad(term, zs, retain_graph=True)
        # softmax losses are shift-invariant over classes: ∂/∂gap = (∂/∂z_fg − ∂/∂z_bg) / 2
        g_gap = (g[:, 1] - g[:, 0]).float() / 2
        out[f"diag_push_{name}_fg"] = float(-(g_gap * fg).sum())
        out[f"diag_push_{name}_bg"] = float(-(g_gap * bg).sum())
        out[f"diag_gnorm_{name}"] = float(g.float().norm())
    return out


def feature_diagnostics(feats: Sequence[torch.Tensor], term: torch.Tensor, name: str) -> dict[str, float]:
    """Exactly-zero pixel vectors of student features ``[B, C, H, W]`` and the term's gradient on them.

    Returns ``diag_<name>_zero_px`` (fraction of pixels whose channel vector is exactly 0),
    ``diag_<name>_gmax`` (max ``|∂term/∂f|`` over all features) and ``diag_<name>_gmax_zero`` (the same
    over the zero pixels only; 0 when there are none).
    """
    grads = torch.autograd.grad(term, list(feats), retain_graph=True, allow_unused=True)
    n_px = n_zero = 0
    gmax = gmax_zero = 0.0
    for f, g in zip(feats, grads):
        zero = (f.detach() == 0).all(1)  # [B, H, W]
        n_px, n_zero = n_px + zero.numel(), n_zero + int(zero.sum())
        if g is None:
            continue
        ga = g.detach().abs().amax(1)  # [B, H, W]
        gmax = max(gmax, float(ga.max()))
        if zero.any():
            gmax_zero = max(gmax_zero, float(ga[zero].max()))
    return {f"diag_{name}_zero_px": n_zero / max(n_px, 1), f"diag_{name}_gmax": gmax,
            f"diag_{name}_gmax_zero": gmax_zero}


def _masked_mean(x: torch.Tensor, mask: torch.Tensor) -> float:
    return float(x[mask].mean()) if mask.any() else float("nan")


# -- the terms ---------------------------------------------------------------------------------
@register_loss("dice_ce")
def _dice_ce(**kwargs) -> nn.Module:
    """MONAI DiceCELoss on logits ``[B, K, H, W]`` and integer labels ``[B, 1, H, W]``."""
    return DiceCELoss(to_onehot_y=True, softmax=True, **kwargs)


@register_loss("kd_logits")
class LogitsKD(nn.Module):
    """Logits Module: ``ops.kd_logits_loss(zs, zt, T)`` on ``[B, K, H, W]`` logits (zt detached)."""

    def __init__(self, temperature: float = 4.0, class_balanced: bool = False) -> None:
        super().__init__()
        self.temperature = float(temperature)
        self.class_balanced = bool(class_balanced)

    def forward(self, zs: torch.Tensor, zt: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels``: ground truth ``[B, 1, H, W]`` or ``[B, H, W]`` (``class_balanced`` only)."""
        zs, zt = zs.float(), zt.detach().float()
        if not self.class_balanced:
            return ops.kd_logits_loss(zs, zt, self.temperature)
        if labels is None:
            raise ValueError("class-balanced logits KD needs the ground-truth labels")
        return class_balanced_kd(zs, zt, labels, self.temperature)


def class_balanced_kd(zs: torch.Tensor, zt: torch.Tensor, labels: torch.Tensor,
                      temperature: float) -> torch.Tensor:
    """Logits KD averaged per ground-truth class, then over the classes present in the batch.

    ``loss = 1/|K'| · Σ_{k ∈ K'} T² · mean_{i : y_i = k} KL(p_t,i ‖ p_s,i)``, ``p = softmax(z / T)`` over
    classes, ``K'`` = the classes with at least one pixel in the batch; each class mean is
    ``ops.kd_logits_loss`` on that class's pixels. With a single class present it is the plain
    pixel mean.

    Why (issue 13): the plain pixel mean gives each class a weight equal to its area. For prostate
    (1–2 % of the pixels) and ``T = 4`` the ``T²``-scaled KL acts on the background like a regression of
    the student's logit gap onto the teacher's (gradient ≈ ``(g_s − g_t)/4`` per pixel while
    ``|g| ≲ T``); its pull on the background is then several times cross-entropy's and holds the
    student's background gap at the teacher's (≈ −6.8), so the foreground can only turn positive once
    the student separates the classes as strongly as the teacher — which a short schedule never
    reaches (measured: all-background students at T = 4). Averaging per class gives the foreground
    the same say as the background.

    Args:
        zs, zt: student / teacher logits ``[B, K, H, W]``; labels: integers ``[B, 1, H, W]`` or
            ``[B, H, W]`` at the logits' resolution.
    """
    num_classes = zs.shape[1]
    y = (labels[:, 0] if labels.ndim == 4 else labels).reshape(-1)
    if y.numel() != zs.shape[0] * zs.shape[2] * zs.shape[3]:
        raise ValueError(f"labels {list(labels.shape)} do not match logits {list(zs.shape)}")
    flat_s = zs.permute(0, 2, 3, 1).reshape(-1, num_classes)
    flat_t = zt.permute(0, 2, 3, 1).reshape(-1, num_classes)
    means = [ops.kd_logits_loss(_pixels_as_map(flat_s[y == k]), _pixels_as_map(flat_t[y == k]), temperature)
             for k in range(num_classes) if bool((y == k).any())]
    return torch.stack(means).mean()


def _pixels_as_map(x: torch.Tensor) -> torch.Tensor:
    """``[n, K]`` pixel rows → a ``[1, K, n, 1]`` map (the layout the ops take)."""
    return x.t().reshape(1, x.shape[1], x.shape[0], 1).contiguous()


@register_loss("cwd")
class ChannelWiseKD(nn.Module):
    """Channel-wise distillation (CWD; Shu et al., "Channel-wise Knowledge Distillation for Dense
    Prediction", ICCV 2021) on maps ``[B, C, H, W]`` with the same ``C`` (here: the logits).

    Each channel becomes a distribution over its pixels, ``φ(y)_{b,c,i} = softmax_i(y_{b,c,i} / τ)``, and

        ``loss = τ² / (B·C) · Σ_{b,c} Σ_i φ(y_t)_{b,c,i} · (log φ(y_t)_{b,c,i} − log φ(y_s)_{b,c,i})``

    (the paper's Eq. 3–4 with its τ² factor, averaged over channels and samples as in the authors'
    mmrazor/mmsegmentation code), by the fused op ``relkd_bench.ops.cwd_loss``.
    """

    def __init__(self, temperature: float = 1.0) -> None:
        super().__init__()
        self.temperature = float(temperature)

    def forward(self, zs: torch.Tensor, zt: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels`` is ignored (the signature matches :class:`LogitsKD`)."""
        return ops.cwd_loss(zs.float(), zt.detach().float(), self.temperature)


cwd_loss = ops.cwd_loss  # the CWD formula of :class:`ChannelWiseKD` (one definition: relkd_bench/ops/cwd.py)


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
    * ``relation_kl``: ``ops.relation_kl_loss(fs, ft, temperature, pool)`` (softmax pixel relations).
    """

    def __init__(self, variant: str = "class_aware", pool: int = 1, align: str = "resize_teacher",
                 intra_weight: float = 1.0, inter_weight: float = 1.0, temperature: float = 1.0,
                 num_classes: int = 2) -> None:
        super().__init__()
        if variant not in ("cosine", "class_aware", "relation_kl"):
            raise ValueError(f"unknown AAM variant {variant!r}")
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


def _logits_term(cfg: DistillConfig) -> nn.Module:
    """The λ1 term named by ``cfg.logits_variant`` (``kd``, ``kd_balanced`` or ``cwd``)."""
    if cfg.logits_variant == "cwd":
        return build_loss("cwd", temperature=cfg.temperature)
    if cfg.logits_variant not in ("kd", "kd_balanced"):
        raise ValueError(f"unknown logits variant {cfg.logits_variant!r}")
    return build_loss("kd_logits", temperature=cfg.temperature,
                      class_balanced=cfg.logits_variant == "kd_balanced")


for _v in ("cosine", "class_aware", "relation_kl"):
    register_loss(f"aam_{_v}")(lambda _v=_v, **kw: AffinityLoss(variant=_v, **kw))


@register_loss("skd_pairwise")
class PairwiseSKD(nn.Module):
    """SKD pair-wise distillation (Liu et al., "Structured Knowledge Distillation for Semantic
    Segmentation", CVPR 2019, Eq. 2) on features ``fs [B, Cs, Hs, Ws]``, ``ft [B, Ct, Ht, Wt]``.

    The pair is aligned to one H, W (``align``), then each ``β×β`` patch becomes one node by max pooling
    (kernel = stride = ``pool`` = β, ``ceil_mode``; SKD's node rule, not the AAM average), and

        ``a_ij = x_iᵀx_j / (‖x_i‖ ‖x_j‖)``,  ``loss = 1/(B·N'²) · Σ_b Σ_ij (a^s_ij − a^t_ij)²``

    over the ``N'`` nodes: ``ops.affinity_loss`` (no labels) of the pooled maps. The authors' code pools
    the map to 2×2 nodes; later re-implementations (CIRKD's) use β = 2 or 4. Cs and Ct may differ.
    """

    def __init__(self, pool: int = 2, align: str = "resize_teacher", **_: object) -> None:
        super().__init__()
        if align == "none":
            raise ValueError("SKD needs equal H, W: align must be resize_teacher, resize_student or pool")
        self.pool, self.align = int(pool), align

    def forward(self, fs: torch.Tensor, ft: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
        """``labels`` is ignored (the signature matches :class:`AffinityLoss`)."""
        fs, ft = align_pair(fs.float(), ft.detach().float(), self.align)
        return ops.affinity_loss(skd_nodes(fs, self.pool), skd_nodes(ft, self.pool))


def skd_nodes(x: torch.Tensor, pool: int) -> torch.Tensor:
    """SKD's nodes: ``β×β`` max pooling (kernel = stride = β, ceil mode) of ``[B, C, H, W]``."""
    return x if pool == 1 else F.max_pool2d(x, pool, stride=pool, ceil_mode=True)


register_loss("aam_skd")(lambda **kw: PairwiseSKD(**kw))


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
        self.logits = _logits_term(cfg) if cfg.lambda_logits > 0 else None
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
        self.diagnostics = diagnostics_requested()
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
            lm = self.logits(zs, zt, labels)
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
        if self.diagnostics and torch.is_grad_enabled():
            parts.update(self._diagnose(zs, labels, zt, lm if self.logits is not None else None,
                                        aa if len(self.aa) else None, feats_s))
        return total, parts

    def _diagnose(self, zs: torch.Tensor, labels: torch.Tensor, zt: torch.Tensor | None,
                  lm: torch.Tensor | None, aa: torch.Tensor | None,
                  feats_s: Mapping[str, torch.Tensor] | None) -> dict[str, float]:
        """The ``diag_*`` parts (see :func:`logit_diagnostics`, :func:`feature_diagnostics`)."""
        c = self.cfg
        terms = {"dice": self.seg.lambda_dice * self.seg.dice(zs.float(), labels),
                 "ce": self.seg.lambda_ce * self.seg.ce(zs.float(), labels)}
        if lm is not None:
            terms["lm"] = c.lambda_logits * lm
        out = logit_diagnostics(zs, labels, zt, terms)
        if aa is not None and feats_s:
            taps = [feats_s[s] for s, _ in self.aa_pairs]
            out.update(feature_diagnostics(taps, c.lambda_aa * aa, "aa"))
        return out
