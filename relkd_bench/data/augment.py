"""Training augmentation (MONAI dictionary transforms) for 2D slices.

Input/output: ``{"image": [C, H, W] float, "label": [1, H, W]}``. Spatial transforms act on both keys
(nearest-neighbour for the label); intensity transforms on the image only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from monai.transforms import (
    Compose,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandScaleIntensityd,
)

__all__ = ["AugmentConfig", "train_transforms"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation strengths and probabilities.

    Attributes:
        flip_prob: left-right flip probability.
        affine_prob, rotate_deg, scale: in-plane rotation (±deg) and isotropic-ish scaling (±fraction).
        gamma_prob, gamma: gamma contrast change range.
        intensity_prob, intensity_scale: multiplicative intensity change (±fraction).
        noise_prob, noise_std: additive Gaussian noise (in normalized intensity units).
    """

    flip_prob: float = 0.5
    affine_prob: float = 0.5
    rotate_deg: float = 10.0
    scale: float = 0.1
    gamma_prob: float = 0.3
    gamma: tuple[float, float] = (0.7, 1.5)
    intensity_prob: float = 0.3
    intensity_scale: float = 0.1
    noise_prob: float = 0.3
    noise_std: float = 0.05


def train_transforms(cfg: AugmentConfig | None = None, seed: int | None = None) -> Compose:
    """MONAI ``Compose`` of flips, small rotations/scaling, gamma/contrast, intensity scale and noise."""
    cfg = cfg or AugmentConfig()
    keys = ("image", "label")
    t = Compose([
        RandFlipd(keys, prob=cfg.flip_prob, spatial_axis=1),
        RandAffined(keys, prob=cfg.affine_prob, rotate_range=math.radians(cfg.rotate_deg),
                    scale_range=(cfg.scale, cfg.scale), mode=("bilinear", "nearest"), padding_mode="border"),
        RandAdjustContrastd("image", prob=cfg.gamma_prob, gamma=cfg.gamma, retain_stats=True),
        RandScaleIntensityd("image", factors=cfg.intensity_scale, prob=cfg.intensity_prob),
        RandGaussianNoised("image", prob=cfg.noise_prob, std=cfg.noise_std),
    ])
    if seed is not None:
        t.set_random_state(seed=seed)
    return t
