"""ENet student (Paszke et al., "ENet: A Deep Neural Network Architecture for Real-Time Semantic
Segmentation", arXiv:1606.02147, 2016).

Source followed: the authors' own Torch7 code, e-lab/ENet-training (``train/models/encoder.lua`` and
``decoder.lua``), re-written in PyTorch: the paper's Table 1 layer list, internal width = output/4,
per-channel PReLU in the encoder and ReLU in the decoder, bias only on the middle 3x3 convolutions,
BN eps 1e-3, a 2x2/2 transposed convolution as the last layer. The paper reports 0.37 M parameters
(Cityscapes, RGB); the popular davidtvs/PyTorch-ENet port (in/4 internal width in down-sampling
blocks, scalar PReLU, no biases) has about 0.35 M.

Input: ``[B, in_channels, H, W]`` with H, W multiples of 8 (three 2x down-samplings, max-unpooling back).
"""

from __future__ import annotations

import torch
from torch import nn

from relkd_bench.models.base import SegModel, TapSpec
from relkd_bench.models.registry import register_model

__all__ = ["ENet"]


class InitialBlock(nn.Module):
    """``[B, Cin, H, W] -> [B, out, H/2, W/2]``: concat(3x3/2 conv, 2x2 max-pool), BN, PReLU."""

    def __init__(self, cin: int, cout: int = 16) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout - cin, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class EncoderBottleneck(nn.Module):
    """Encoder bottleneck ``[B, Cin, H, W] -> [B, Cout, H/s, W/s]`` (s = 2 if ``downsample``).

    Extension: ``s x s`` projection to ``Cout/4`` channels, a 3x3 (``dilation``) or ``k x 1`` + ``1 x k``
    (``asymmetric=k``) convolution, 1x1 expansion, spatial dropout; main branch: identity, or 2x2
    max-pool (indices kept) and zero channel padding. Sum, then per-channel PReLU.
    Returns ``(y, pool indices)`` when ``downsample``, else ``y``.
    """

    def __init__(
        self, cin: int, cout: int, *, downsample: bool = False, dilation: int = 1, asymmetric: int = 0,
        dropout: float = 0.1,
    ) -> None:  # fmt: skip
        super().__init__()
        mid, s = cout // 4, (2 if downsample else 1)
        if asymmetric:
            p = asymmetric // 2
            middle = [
                nn.Conv2d(mid, mid, (asymmetric, 1), padding=(p, 0), bias=False),
                nn.Conv2d(mid, mid, (1, asymmetric), padding=(0, p)),
            ]
        else:
            middle = [nn.Conv2d(mid, mid, 3, padding=dilation, dilation=dilation)]
        self.ext = nn.Sequential(
            nn.Conv2d(cin, mid, s, stride=s, bias=False), nn.BatchNorm2d(mid, eps=1e-3), nn.PReLU(mid),
            *middle, nn.BatchNorm2d(mid, eps=1e-3), nn.PReLU(mid),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3),
            nn.Dropout2d(dropout),
        )  # fmt: skip
        self.pool = nn.MaxPool2d(2, stride=2, return_indices=True) if downsample else None
        self.pad = cout - cin
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        ext = self.ext(x)
        idx = None
        if self.pool is not None:
            x, idx = self.pool(x)
        if self.pad:
            x = torch.cat([x, x.new_zeros(x.shape[0], self.pad, *x.shape[2:])], 1)
        y = self.act(x + ext)
        return y if idx is None else (y, idx)


class DecoderBottleneck(nn.Module):
    """Decoder bottleneck ``[B, Cin, H, W] (+ indices) -> [B, Cout, sH, sW]`` (s = 2 if ``upsample``).

    Extension: 1x1 projection to ``Cout/4``, 3x3 convolution (transposed, stride 2, if ``upsample``),
    1x1 expansion; main branch: identity, or 1x1 conv + BN + max-unpooling with the encoder's
    indices. Sum, then ReLU.
    """

    def __init__(self, cin: int, cout: int, *, upsample: bool = False) -> None:
        super().__init__()
        mid = cout // 4
        middle = (
            nn.ConvTranspose2d(mid, mid, 3, stride=2, padding=1, output_padding=1)
            if upsample
            else nn.Conv2d(mid, mid, 3, padding=1)
        )
        self.ext = nn.Sequential(
            nn.Conv2d(cin, mid, 1, bias=False), nn.BatchNorm2d(mid, eps=1e-3), nn.ReLU(),
            middle, nn.BatchNorm2d(mid, eps=1e-3), nn.ReLU(),
            nn.Conv2d(mid, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3),
        )  # fmt: skip
        self.main = (
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout, eps=1e-3))
            if upsample or cin != cout
            else nn.Identity()
        )
        self.unpool = nn.MaxUnpool2d(2) if upsample else None
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        main = self.main(x)
        if self.unpool is not None:
            main = self.unpool(main, indices, output_size=[2 * s for s in x.shape[-2:]])
        return self.act(main + self.ext(x))


def _stage23() -> list[nn.Module]:
    """The 8 bottlenecks shared by stages 2 and 3 (regular, dilated 2, asym 5, dilated 4, ...)."""
    b = EncoderBottleneck
    return [
        b(128, 128),
        b(128, 128, dilation=2),
        b(128, 128, asymmetric=5),
        b(128, 128, dilation=4),
        b(128, 128),
        b(128, 128, dilation=8),
        b(128, 128, asymmetric=5),
        b(128, 128, dilation=16),
    ]


@register_model("enet", role="student")
class ENet(SegModel):
    """ENet: ``[B, in_channels, H, W] -> logits [B, num_classes, H, W]``, H and W multiples of 8.

    Taps (``feature_shape``):

    ============  ===================  =========  ======
    tap           module               channels   stride
    ============  ===================  =========  ======
    ``initial``   ``initial``          16         2
    ``stage1``    ``stage1``           64         4
    ``stage2``    ``stage2``           128        8
    ``encoder``   ``stage3`` (default) 128        8
    ``decoder``   ``stage4`` (default) 64         4
    ``stage5``    ``stage5``           16         2
    ============  ===================  =========  ======

    Args:
        in_channels: 1, or 3 for 2.5D input (must be < 16).
        num_classes: output classes.
    """

    size_multiple = 8
    default_taps = ("encoder", "decoder")

    def __init__(self, in_channels: int = 1, num_classes: int = 2) -> None:
        super().__init__(in_channels, num_classes)
        if in_channels >= 16:
            raise ValueError(f"ENet needs in_channels < 16, got {in_channels}")
        self.initial = InitialBlock(in_channels, 16)
        self.down1 = EncoderBottleneck(16, 64, downsample=True, dropout=0.01)
        self.stage1 = nn.Sequential(*[EncoderBottleneck(64, 64, dropout=0.01) for _ in range(4)])
        self.down2 = EncoderBottleneck(64, 128, downsample=True)
        self.stage2 = nn.Sequential(*_stage23())
        self.stage3 = nn.Sequential(*_stage23())
        self.up4 = DecoderBottleneck(128, 64, upsample=True)
        self.stage4 = nn.Sequential(DecoderBottleneck(64, 64), DecoderBottleneck(64, 64))
        self.up5 = DecoderBottleneck(64, 16, upsample=True)
        self.stage5 = nn.Sequential(DecoderBottleneck(16, 16))
        self.head = nn.ConvTranspose2d(16, num_classes, 2, stride=2)
        self.taps = {
            "initial": TapSpec("initial", 16, 2),
            "stage1": TapSpec("stage1", 64, 4),
            "stage2": TapSpec("stage2", 128, 8),
            "encoder": TapSpec("stage3", 128, 8),
            "decoder": TapSpec("stage4", 64, 4),
            "stage5": TapSpec("stage5", 16, 2),
        }

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.initial(x)
        x, idx1 = self.down1(x)
        x, idx2 = self.down2(self.stage1(x))
        x = self.stage3(self.stage2(x))
        x = self.stage4(self.up4(x, idx2))
        x = self.stage5(self.up5(x, idx1))
        return self.head(x)
