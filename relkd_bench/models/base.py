"""Common interface of every segmentation model in relkd-bench.

A :class:`SegModel` maps an image batch ``x: [B, C_in, H, W]`` to logits ``[B, K, H, W]`` and can
return named intermediate features for distillation::

    logits, feats = model.forward_features(x)       # feats: dict[str, Tensor], keys = model.default_taps
    model.feature_channels("encoder")               # channels of that tap, without running the model
    model.feature_stride("encoder")                 # tap is [B, C, H // stride, W // stride]

Taps are forward hooks on named submodules (see :class:`~relkd_bench.models.taps.FeatureTap`); any
dotted module name from ``model.named_modules()`` can be tapped too (its shape is then not declared).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from relkd_bench.models.taps import FeatureTap

__all__ = ["SegModel", "TapSpec"]


@dataclass(frozen=True)
class TapSpec:
    """A declared feature tap.

    Attributes:
        module: dotted path of the submodule whose output is the feature.
        channels: channels of the feature.
        stride: spatial down-sampling w.r.t. the input: the feature is ``[B, channels, H/stride, W/stride]``.
    """

    module: str
    channels: int
    stride: int


class SegModel(nn.Module):
    """Base class: input checks, declared taps, ``forward_features``.

    Subclasses set ``size_multiple``, ``default_taps`` and fill ``self.taps`` in ``__init__``, and
    implement ``_forward(x) -> logits``.

    Args:
        in_channels: input channels (1, or 3 for 2.5D stacks of adjacent slices).
        num_classes: output classes ``K`` (2: background/prostate).
    """

    size_multiple: int = 8
    default_taps: tuple[str, ...] = ("encoder", "decoder")

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels}, {num_classes}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.taps: dict[str, TapSpec] = {}

    # -- shapes --------------------------------------------------------------------------------
    def _spec(self, name: str) -> TapSpec:
        if name not in self.taps:
            raise ValueError(f"{type(self).__name__} declares no tap {name!r}; declared: {sorted(self.taps)}")
        return self.taps[name]

    def feature_channels(self, name: str) -> int:
        """Channels of the declared tap ``name``."""
        return self._spec(name).channels

    def feature_stride(self, name: str) -> int:
        """Down-sampling factor of the declared tap ``name`` relative to the input."""
        return self._spec(name).stride

    def feature_shape(self, name: str, height: int, width: int, batch: int = 1) -> tuple[int, int, int, int]:
        """Shape ``(B, C, H/stride, W/stride)`` of tap ``name`` for an input of ``height x width``."""
        spec = self._spec(name)
        return (batch, spec.channels, height // spec.stride, width // spec.stride)

    def check_input(self, x: torch.Tensor) -> None:
        """Raise ``ValueError`` unless ``x`` is ``[B, in_channels, H, W]`` with H, W multiples of
        ``size_multiple``."""
        name = type(self).__name__
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"{name} expects input [B, {self.in_channels}, H, W], got {tuple(x.shape)}")
        h, w = x.shape[-2:]
        m = self.size_multiple
        if h % m or w % m or h == 0 or w == 0:
            raise ValueError(
                f"{name} needs H and W to be positive multiples of {m}, got {h}x{w} "
                f"(crop or pad the input, e.g. to {max(m, -(-h // m) * m)}x{max(m, -(-w // m) * m)})"
            )

    # -- forward -------------------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``[B, num_classes, H, W]`` for ``x: [B, in_channels, H, W]``."""
        self.check_input(x)
        return self._forward(x)

    def forward_features(
        self, x: torch.Tensor, taps: Sequence[str] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Logits and named features.

        Args:
            x: ``[B, in_channels, H, W]``.
            taps: declared tap names and/or dotted module names; default ``self.default_taps``.

        Returns:
            ``(logits [B, K, H, W], {tap: feature})``; a declared tap has shape
            :meth:`feature_shape`.
        """
        names = self.default_taps if taps is None else tuple(taps)
        paths = {t: (self.taps[t].module if t in self.taps else t) for t in names}
        with FeatureTap(self, paths) as tap:
            logits = self(x)
        missing = [t for t in names if t not in tap.features]
        if missing:
            raise RuntimeError(f"{type(self).__name__}: taps {missing} did not run in forward")
        return logits, {t: tap.features[t] for t in names}
