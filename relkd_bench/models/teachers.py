"""Heavy teachers built from MONAI networks, with feature taps by forward hooks on MONAI submodules.

=============  =========================================================  ==============
name           network                                                    size multiple
=============  =========================================================  ==============
``unet_wide``  ``monai.networks.nets.UNet``: channels 32-64-128-256-512,    16
               strides 2-2-2-2, two residual units per level (6.5 M)
``segresnet``  ``monai.networks.nets.SegResNet``: 32 initial filters,       8
               blocks down 1-2-2-4, up 1-1-1 (6.3 M)
``dynunet``    ``monai.networks.nets.DynUNet`` (nnU-Net style): filters     16
               32-64-128-256-512, strides 1-2-2-2-2, residual blocks (7.9 M)
=============  =========================================================  ==============

"Wide" is relative to the MONAI tutorials' 16-channel UNet. All are ``[B, in_channels, H, W] ->
[B, num_classes, H, W]`` and declare the taps ``encoder`` (end of the encoder / bottleneck) and
``decoder`` (the stride-4 decoder stage, the resolution of the students' decoder taps).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.nets import DynUNet, SegResNet, UNet

from relkd_bench.models.base import SegModel, TapSpec
from relkd_bench.models.registry import register_model

__all__ = ["DynUNetTeacher", "SegResNetTeacher", "UNetTeacher"]


class _MonaiTeacher(SegModel):
    """Holds a MONAI network as ``self.net``; taps are paths below ``net``."""

    net: torch.nn.Module

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register_model("unet_wide", role="teacher")
class UNetTeacher(_MonaiTeacher):
    """Residual MONAI UNet. H, W multiples of ``2 ** len(strides)`` (16 by default).

    Taps (``c`` = channels, ``n`` = len(strides)):

    ============  =================================  ============  ===========
    tap           module                             channels      stride
    ============  =================================  ============  ===========
    ``encoder``   bottom residual unit (default)     c[-1] = 512   2**n = 16
    ``decoder``   up-sampling block at stride 4      c[1] = 64     4
    ============  =================================  ============  ===========

    Args:
        in_channels, num_classes: input channels and output classes.
        channels: features per level (the last is the bottom).
        strides: down-sampling per level (``len(channels) - 1`` entries, all 2).
        num_res_units: residual units per level.
    """

    default_taps = ("encoder", "decoder")

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        channels: Sequence[int] = (32, 64, 128, 256, 512),
        strides: Sequence[int] = (2, 2, 2, 2),
        num_res_units: int = 2,
    ) -> None:
        super().__init__(in_channels, num_classes)
        if len(strides) != len(channels) - 1 or len(strides) < 2 or any(s != 2 for s in strides):
            raise ValueError(f"need len(channels) - 1 >= 2 strides, all 2; got {channels}, {strides}")
        self.net = UNet(2, in_channels, num_classes, channels, strides, num_res_units=num_res_units)
        n = len(strides)
        self.size_multiple = 2**n
        # MONAI nests levels as model.1.submodule.1.submodule...; the bottom is the innermost submodule.
        bottom = "net.model" + ".1.submodule" * n
        up4 = "net.model" + ".1.submodule" + ".1.submodule" + ".2"  # up block of level 2 -> stride 4
        self.taps = {
            "encoder": TapSpec(bottom, channels[-1], 2**n),
            "decoder": TapSpec(up4, channels[1], 4),
        }


@register_model("segresnet", role="teacher")
class SegResNetTeacher(_MonaiTeacher):
    """MONAI SegResNet (Myronenko 2018, without the VAE branch). H, W multiples of
    ``2 ** (len(blocks_down) - 1)`` (8 by default).

    Taps (``f`` = init_filters, ``n`` = len(blocks_down) - 1):

    ============  =====================================  ===========  ========
    tap           module                                 channels     stride
    ============  =====================================  ===========  ========
    ``encoder``   ``net.down_layers.{n}`` (default)      f * 2**n     2**n = 8
    ``decoder``   ``net.up_layers.{n-3}`` (default)      f * 4        4
    ============  =====================================  ===========  ========
    """

    default_taps = ("encoder", "decoder")

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        init_filters: int = 32,
        blocks_down: Sequence[int] = (1, 2, 2, 4),
        blocks_up: Sequence[int] = (1, 1, 1),
    ) -> None:
        super().__init__(in_channels, num_classes)
        n = len(blocks_down) - 1
        if n < 2 or len(blocks_up) != n:
            raise ValueError(
                f"need >= 3 levels and len(blocks_up) == len(blocks_down) - 1, got {blocks_down}, {blocks_up}"
            )
        self.net = SegResNet(
            spatial_dims=2, init_filters=init_filters, in_channels=in_channels, out_channels=num_classes,
            blocks_down=tuple(blocks_down), blocks_up=tuple(blocks_up),
        )  # fmt: skip
        self.size_multiple = 2**n
        self.taps = {
            "encoder": TapSpec(f"net.down_layers.{n}", init_filters * 2**n, 2**n),
            "decoder": TapSpec(f"net.up_layers.{n - 3}", init_filters * 4, 4),
        }


@register_model("dynunet", role="teacher")
class DynUNetTeacher(_MonaiTeacher):
    """MONAI DynUNet (nnU-Net-like, residual blocks, no deep supervision). H, W multiples of
    ``prod(strides)`` (16 by default).

    Taps (``f`` = filters):

    ============  =================================  ============  ==============
    tap           module                             channels      stride
    ============  =================================  ============  ==============
    ``encoder``   ``net.bottleneck`` (default)       f[-1] = 512   prod(strides)
    ``decoder``   up-sampling block at stride 4      f[2] = 128    4
    ============  =================================  ============  ==============
    """

    default_taps = ("encoder", "decoder")

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 2,
        filters: Sequence[int] = (32, 64, 128, 256, 512),
        strides: Sequence[int] = (1, 2, 2, 2, 2),
    ) -> None:
        super().__init__(in_channels, num_classes)
        if len(filters) != len(strides) or strides[0] != 1 or any(s != 2 for s in strides[1:]):
            raise ValueError(f"need strides (1, 2, ..., 2) matching filters, got {filters}, {strides}")
        n = len(strides) - 1
        if n < 3:
            raise ValueError(f"DynUNet teacher needs at least 3 down-samplings, got {n}")
        self.net = DynUNet(
            spatial_dims=2, in_channels=in_channels, out_channels=num_classes, kernel_size=[3] * len(strides),
            strides=list(strides), upsample_kernel_size=list(strides[1:]), filters=list(filters),
            res_block=True,
        )  # fmt: skip
        self.size_multiple = 2**n
        # upsamples[i] brings stride 2**(n - i) to 2**(n - i - 1): stride 4 is upsamples[n - 3].
        self.taps = {
            "encoder": TapSpec("net.bottleneck", filters[-1], 2**n),
            "decoder": TapSpec(f"net.upsamples.{n - 3}", filters[2], 4),
        }
