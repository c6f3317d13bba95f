"""ERFNet student (Romera et al., "ERFNet: Efficient Residual Factorized ConvNet for Real-Time Semantic
Segmentation", IEEE T-ITS 2018).

Source followed: the authors' PyTorch code, Eromera/erfnet_pytorch (``train/erfnet.py``), re-written:
down-sampler = concat(3x3/2 conv, 2x2 max-pool) + BN + ReLU; ``non-bottleneck-1D`` = 3x1, 1x3,
3x1 (dilated), 1x3 (dilated) convolutions with biases, BN after each pair, residual, ReLU; decoder
up-sampler = 3x3/2 transposed conv + BN + ReLU; a 2x2/2 transposed convolution as the last layer.
The paper reports 2.1 M parameters (the code gives 2.06 M for Cityscapes' 20 classes).

Input: ``[B, in_channels, H, W]`` with H, W multiples of 8.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from relkd_bench.models.base import SegModel, TapSpec
from relkd_bench.models.registry import register_model

__all__ = ["ERFNet"]


class Downsampler(nn.Module):
    """``[B, Cin, H, W] -> [B, Cout, H/2, W/2]``: concat(3x3/2 conv to ``Cout - Cin``, 2x2 max-pool)."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        if cout <= cin:
            raise ValueError(f"Downsampler needs cout > cin, got {cin} -> {cout}")
        self.conv = nn.Conv2d(cin, cout - cin, 3, stride=2, padding=1)
        self.pool = nn.MaxPool2d(2, stride=2)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(torch.cat([self.conv(x), self.pool(x)], 1)))


class NonBottleneck1D(nn.Module):
    """Factorized residual block ``[B, C, H, W] -> [B, C, H, W]`` with dilation ``dilation`` in its
    second pair of 1-D convolutions."""

    def __init__(self, channels: int, dropout: float = 0.0, dilation: int = 1) -> None:
        super().__init__()
        c, d = channels, dilation
        self.conv3x1_1 = nn.Conv2d(c, c, (3, 1), padding=(1, 0))
        self.conv1x3_1 = nn.Conv2d(c, c, (1, 3), padding=(0, 1))
        self.bn1 = nn.BatchNorm2d(c, eps=1e-3)
        self.conv3x1_2 = nn.Conv2d(c, c, (3, 1), padding=(d, 0), dilation=(d, 1))
        self.conv1x3_2 = nn.Conv2d(c, c, (1, 3), padding=(0, d), dilation=(1, d))
        self.bn2 = nn.BatchNorm2d(c, eps=1e-3)
        self.dropout = nn.Dropout2d(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.conv3x1_1(x))
        y = F.relu(self.bn1(self.conv1x3_1(y)))
        y = F.relu(self.conv3x1_2(y))
        y = self.dropout(self.bn2(self.conv1x3_2(y)))
        return F.relu(y + x)


class Upsampler(nn.Module):
    """``[B, Cin, H, W] -> [B, Cout, 2H, 2W]``: 3x3/2 transposed conv, BN, ReLU."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose2d(cin, cout, 3, stride=2, padding=1, output_padding=1)
        self.bn = nn.BatchNorm2d(cout, eps=1e-3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.bn(self.conv(x)))


@register_model("erfnet", role="student")
class ERFNet(SegModel):
    """ERFNet: ``[B, in_channels, H, W] -> logits [B, num_classes, H, W]``, H and W multiples of 8.

    Taps (``feature_shape``):

    ============  ===================  =========  ======
    tap           module               channels   stride
    ============  ===================  =========  ======
    ``stage1``    ``stage1``           64         4
    ``encoder``   ``stage2`` (default) 128        8
    ``decoder``   ``stage3`` (default) 64         4
    ``stage4``    ``stage4``           16         2
    ============  ===================  =========  ======

    Args:
        in_channels: 1, or 3 for 2.5D input (must be < 16).
        num_classes: output classes.
        dropout: spatial dropout of the 64-channel / 128-channel encoder blocks (paper: 0.03 / 0.3).
    """

    size_multiple = 8
    default_taps = ("encoder", "decoder")

    def __init__(
        self, in_channels: int = 1, num_classes: int = 2, dropout: tuple[float, float] = (0.03, 0.3)
    ) -> None:
        super().__init__(in_channels, num_classes)
        if in_channels >= 16:
            raise ValueError(f"ERFNet needs in_channels < 16, got {in_channels}")
        p1, p2 = dropout
        self.down1 = Downsampler(in_channels, 16)
        self.down2 = Downsampler(16, 64)
        self.stage1 = nn.Sequential(*[NonBottleneck1D(64, p1, 1) for _ in range(5)])
        self.down3 = Downsampler(64, 128)
        self.stage2 = nn.Sequential(*[NonBottleneck1D(128, p2, d) for _ in range(2) for d in (2, 4, 8, 16)])
        self.up1 = Upsampler(128, 64)
        self.stage3 = nn.Sequential(NonBottleneck1D(64), NonBottleneck1D(64))
        self.up2 = Upsampler(64, 16)
        self.stage4 = nn.Sequential(NonBottleneck1D(16), NonBottleneck1D(16))
        self.head = nn.ConvTranspose2d(16, num_classes, 2, stride=2)
        self.taps = {
            "stage1": TapSpec("stage1", 64, 4),
            "encoder": TapSpec("stage2", 128, 8),
            "decoder": TapSpec("stage3", 64, 4),
            "stage4": TapSpec("stage4", 16, 2),
        }

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stage1(self.down2(self.down1(x)))
        x = self.stage2(self.down3(x))
        x = self.stage3(self.up1(x))
        x = self.stage4(self.up2(x))
        return self.head(x)
