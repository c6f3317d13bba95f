"""ESPNet student (Mehta et al., "ESPNet: Efficient Spatial Pyramid of Dilated Convolutions for Semantic
Segmentation", ECCV 2018).

Source followed: the authors' code, sacmehta/ESPNet (``train/Model.py``, class ``ESPNet``: ESPNet-C
encoder with alpha2 = p = 2 and alpha3 = q = 8 ESP modules, plus the light decoder), re-written.
ESP module: 1x1 (or 3x3/2) reduction to ``d = C/5`` channels, parallel 3x3 convolutions with dilation
1, 2, 4, 8, 16, hierarchical feature fusion (running sums of the dilated branches), concat, residual.
The paper reports 0.364 M parameters (Cityscapes, 20 classes, RGB). Its decoder works in class space,
so the count falls with ``num_classes``: for ``num_classes < 5`` the decoder's ESP block has no room for
five branches (``C/5 = 0``) and keeps only the dilation-1 branch (a documented adaptation).

Input: ``[B, in_channels, H, W]`` with H, W multiples of 8.
"""

from __future__ import annotations

import torch
from torch import nn

from relkd_bench.models.base import SegModel, TapSpec
from relkd_bench.models.registry import register_model

__all__ = ["ESPNet"]


class BR(nn.Sequential):
    """BatchNorm (eps 1e-3) + per-channel PReLU; shape-preserving."""

    def __init__(self, channels: int) -> None:
        super().__init__(nn.BatchNorm2d(channels, eps=1e-3), nn.PReLU(channels))


class CBR(nn.Sequential):
    """``k x k`` conv (stride ``s``, no bias) + BN + PReLU: ``[B, Cin, H, W] -> [B, Cout, H/s, W/s]``."""

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), BR(cout))


class ESPBlock(nn.Module):
    """ESP module ``[B, Cin, H, W] -> [B, Cout, H/s, W/s]``.

    Args:
        cin, cout: channels.
        downsample: a 3x3/2 reduction, no residual, BN + PReLU after (``DownSamplerB``); otherwise a
            1x1 reduction, optional residual (``add``), BN + PReLU (``DilatedParllelResidualBlockB``).
        add: residual connection (only when not down-sampling and ``cin == cout``).
    """

    def __init__(self, cin: int, cout: int, *, downsample: bool = False, add: bool = True) -> None:
        super().__init__()
        d = cout // 5
        n1 = cout - 4 * d
        self.reduce = (
            nn.Conv2d(cin, max(d, 1), 3, stride=2, padding=1, bias=False)
            if downsample
            else nn.Conv2d(cin, max(d, 1), 1, bias=False)
        )
        self.d1 = nn.Conv2d(max(d, 1), n1, 3, padding=1, bias=False)
        self.dilated = nn.ModuleList(
            [nn.Conv2d(d, d, 3, padding=r, dilation=r, bias=False) for r in (2, 4, 8, 16)] if d else []
        )
        self.add = add and not downsample and cin == cout
        self.br = BR(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        r = self.reduce(x)
        outs = [self.d1(r)]
        acc = None
        for conv in self.dilated:  # hierarchical feature fusion
            acc = conv(r) if acc is None else acc + conv(r)
            outs.append(acc)
        y = torch.cat(outs, 1) if len(outs) > 1 else outs[0]
        if self.add:
            y = y + x
        return self.br(y)


class AvgDown(nn.Sequential):
    """``times`` 3x3/2 average poolings of the raw input (``InputProjectionA``): ``H -> H / 2**times``."""

    def __init__(self, times: int) -> None:
        super().__init__(*[nn.AvgPool2d(3, stride=2, padding=1) for _ in range(times)])


@register_model("espnet", role="student")
class ESPNet(SegModel):
    """ESPNet: ``[B, in_channels, H, W] -> logits [B, num_classes, H, W]``, H and W multiples of 8.

    Taps (``feature_shape``; ``C_in`` = in_channels, ``K`` = num_classes):

    ============  ==========================  ============  ======
    tap           module                      channels      stride
    ============  ==========================  ============  ======
    ``level1``    ``b1``                      16 + C_in     2
    ``level2``    ``b2`` (default)            128 + C_in    4
    ``encoder``   ``b3`` (default)            256           8
    ``decoder``   ``combine_l2_l3``           K             4
    ============  ==========================  ============  ======

    The default taps are ``("encoder", "level2")``: ESPNet's decoder runs in class space (K
    channels), so its stride-4 feature with real width is the encoder's level-2 output it consumes.

    Args:
        in_channels: 1, or 3 for 2.5D input.
        num_classes: output classes.
        p: ESP modules at level 2 (alpha2). q: ESP modules at level 3 (alpha3).
    """

    size_multiple = 8
    default_taps = ("encoder", "level2")

    def __init__(self, in_channels: int = 1, num_classes: int = 2, p: int = 2, q: int = 8) -> None:
        super().__init__(in_channels, num_classes)
        c, k = in_channels, num_classes
        # encoder (ESPNet-C)
        self.level1 = CBR(c, 16, 3, stride=2)
        self.sample1 = AvgDown(1)
        self.sample2 = AvgDown(2)
        self.b1 = BR(16 + c)
        self.level2_0 = ESPBlock(16 + c, 64, downsample=True)
        self.level2 = nn.Sequential(*[ESPBlock(64, 64) for _ in range(p)])
        self.b2 = BR(128 + c)
        self.level3_0 = ESPBlock(128 + c, 128, downsample=True)
        self.level3 = nn.Sequential(*[ESPBlock(128, 128) for _ in range(q)])
        self.b3 = BR(256)
        self.classifier = nn.Conv2d(256, k, 1, bias=False)
        # light decoder
        self.br = nn.BatchNorm2d(k, eps=1e-3)
        self.up_l3 = nn.ConvTranspose2d(k, k, 2, stride=2, bias=False)
        self.level3_c = nn.Conv2d(128 + c, k, 1, bias=False)
        self.combine_l2_l3 = nn.Sequential(BR(2 * k), ESPBlock(2 * k, k, add=False))
        self.up_l2 = nn.Sequential(nn.ConvTranspose2d(k, k, 2, stride=2, bias=False), BR(k))
        self.conv = CBR(16 + c + k, k, 3)
        self.head = nn.ConvTranspose2d(k, k, 2, stride=2, bias=False)
        self.taps = {
            "level1": TapSpec("b1", 16 + c, 2),
            "level2": TapSpec("b2", 128 + c, 4),
            "encoder": TapSpec("b3", 256, 8),
            "decoder": TapSpec("combine_l2_l3", k, 4),
        }

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        l1 = self.b1(torch.cat([self.level1(x), self.sample1(x)], 1))
        l2_0 = self.level2_0(l1)
        l2 = self.b2(torch.cat([self.level2(l2_0), l2_0, self.sample2(x)], 1))
        l3_0 = self.level3_0(l2)
        l3 = self.b3(torch.cat([l3_0, self.level3(l3_0)], 1))
        up3 = self.up_l3(self.br(self.classifier(l3)))
        comb = self.up_l2(self.combine_l2_l3(torch.cat([self.level3_c(l2), up3], 1)))
        return self.head(self.conv(torch.cat([comb, l1], 1)))
