"""Training augmentation (MONAI dictionary transforms) for 2D slices.

Input/output: ``{"image": [C, H, W] float, "label": [1, H, W]}``. Spatial transforms act on both keys
(nearest-neighbour for the label); intensity transforms on the image only.

Levels (:data:`AUGMENT_LEVELS`, chosen per role by ``data.augment`` / ``teacher.augment`` /
``student.augment``, see :func:`build_transforms`):

- ``none``: no augmentation;
- ``standard``: :func:`train_transforms` (flip, small rotation/scaling, gamma, intensity, noise);
- ``bigaug``: :func:`bigaug_transforms`, stacked acquisition-like transforms for unseen-site robustness
  (BigAug, Zhang et al., IEEE TMI 2020).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any

import torch
from monai.transforms import (
    Compose,
    MapTransform,
    Rand2DElasticd,
    RandAdjustContrastd,
    RandAffined,
    RandBiasField,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandGaussianSmoothd,
    RandGibbsNoised,
    RandHistogramShiftd,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
    RandSimulateLowResolutiond,
    RandZoomd,
)

__all__ = [
    "AUGMENT_LEVELS",
    "AugmentConfig",
    "BigAugConfig",
    "RandBiasFieldZd",
    "bigaug_transforms",
    "build_transforms",
    "train_transforms",
]

AUGMENT_LEVELS = ("none", "standard", "bigaug")


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


@dataclass(frozen=True)
class BigAugConfig:
    """Strengths and probabilities of :func:`bigaug_transforms` (units: pixels of the model input and
    z-scored intensities, the cache's normalization).

    BigAug (Zhang et al., "Generalizing Deep Learning for Medical Image Segmentation to Unseen Domains
    via Deep Stacked Transformation", IEEE TMI 39(7), 2020) stacks n = 9 transforms of image quality
    (sharpness, blurriness, noise), appearance (brightness, contrast, intensity perturbation) and spatial
    configuration (rotation, scaling, deformation), each drawn independently per image; trained on one
    prostate-MRI site it lost 11 % Dice on unseen sites against 39 % with conventional augmentation
    (the paper's abstract). The ranges below are ours, for z-scored 2D slices, not the paper's 3D ones.
    Here the paper's families are kept and the MRI acquisition effects that separate the six sites
    (DESIGN §4: coil bias field, field of view, resolution, contrast, SNR) are added: a bias field,
    a nonlinear histogram shift, a simulated low resolution and Gibbs ringing.

    How the values were chosen (a priori, never on a held-out site):

    - spatial, p = 0.5 each (BigAug draws each transform with p = 0.5): rotation ±20°; isotropic zoom
      0.7–1.4 (a field of view between 150 and 260 mm resized to one size changes the gland's size in
      pixels by up to 1.7×);
      elastic deformation on a control grid of a quarter of the side, magnitude 0–2 (measured: moves
      up to ~15 % of a gland-sized square's pixels), p = 0.2 (the dearest transform, ~17 ms per 96² slice);
      left-right flip p = 0.5 (the pelvis is near-symmetric).
    - bias field (p = 0.4): degree-3 Legendre field, coefficients in ±0.3 (measured: max/min gain over
      the slice 2.4–6.3×, 10th–90th percentile; endorectal coils vary the gain several-fold), applied to
      the magnitude image (see :class:`RandBiasFieldZd`).
    - contrast: gamma 0.65–1.5 (p = 0.5; T2 contrast differs with field strength and sequence),
      histogram shift with 5–10 control points (p = 0.3).
    - resolution and quality: down-up sampling to 50–100 % of the size (area down, bilinear up; p = 0.25),
      Gaussian blur σ 0.25–1.5 px (p = 0.25), unsharp-mask sharpening with α 2–10 (p = 0.2; MONAI's
      default α 10–30 nearly doubles the image std), Gibbs ringing α 0–0.6 (p = 0.15).
    - noise and global intensity: Gaussian noise σ ~ U(0, 0.15) z-units (about the range of SNR 9–45
      after z-scoring; p = 0.3), intensity scale ±10 % and shift ±0.1 (p = 0.3 each: brightness and
      intensity perturbation of BigAug; the per-volume z-score removes most of a global change).

    With these probabilities a slice gets 4.65 of the 14 transforms on average and 0.3 % of the slices
    none; p = 0.5 for all 14 would leave almost no slice near the source appearance.
    """

    flip_prob: float = 0.5
    rotate_prob: float = 0.5
    rotate_deg: float = 20.0
    zoom_prob: float = 0.5
    zoom: tuple[float, float] = (0.7, 1.4)
    elastic_prob: float = 0.2
    elastic_spacing: float = 0.25
    elastic_magnitude: tuple[float, float] = (0.0, 2.0)
    bias_prob: float = 0.4
    bias_degree: int = 3
    bias_coeff: float = 0.3
    gamma_prob: float = 0.5
    gamma: tuple[float, float] = (0.65, 1.5)
    histogram_prob: float = 0.3
    histogram_points: tuple[int, int] = (5, 10)
    lowres_prob: float = 0.25
    lowres_zoom: tuple[float, float] = (0.5, 1.0)
    blur_prob: float = 0.25
    blur_sigma: tuple[float, float] = (0.25, 1.5)
    sharpen_prob: float = 0.2
    sharpen_alpha: tuple[float, float] = (2.0, 10.0)
    gibbs_prob: float = 0.15
    gibbs_alpha: tuple[float, float] = (0.0, 0.6)
    noise_prob: float = 0.3
    noise_std: float = 0.15
    scale_prob: float = 0.3
    scale: float = 0.1
    shift_prob: float = 0.3
    shift: float = 0.1


class RandBiasFieldZd(RandomizableTransform, MapTransform):
    """MONAI ``RandBiasField`` for z-scored images.

    A receive-coil bias multiplies the magnitude signal, so the field is applied to ``x - min(x)``
    (air stays the darkest value), then the slice's mean and std are restored. One field serves all
    channels: 2.5D context slices are adjacent and share the coil's sensitivity (``RandBiasField`` alone
    would draw one field per channel).
    """

    def __init__(self, keys: Any, degree: int = 3, coeff: float = 0.3, prob: float = 0.1) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.field = RandBiasField(degree=degree, coeff_range=(-coeff, coeff), prob=1.0)

    def set_random_state(self, seed: int | None = None, state: Any = None) -> RandBiasFieldZd:
        super().set_random_state(seed, state)
        self.field.set_random_state(seed=int(self.R.randint(2**31)))
        return self

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            img = torch.as_tensor(d[key])
            gain = torch.as_tensor(self.field(torch.ones((1, *img.shape[1:]))), dtype=img.dtype)
            mean, std = img.mean(), img.std()
            out = (img - img.min()) * gain
            d[key] = (out - out.mean()) / out.std().clamp_min(1e-6) * std + mean
        return d


def bigaug_transforms(cfg: BigAugConfig | None = None, seed: int | None = None, size: int = 96) -> Compose:
    """BigAug-style stacked transforms (see :class:`BigAugConfig` for the paper, values and reasons).

    Order: spatial transforms first (image bilinear, label nearest; zoom uses ``nearest-exact``, since
    MONAI's ``nearest`` resize shifts a label by up to one pixel against the bilinear image), then the
    acquisition chain in physical order: coil bias and contrast, resolution (down-up sampling, blur,
    sharpening, Gibbs ringing), noise, global intensity. Noise comes after every resampling so that it
    stays white.

    Args:
        cfg: strengths and probabilities.
        seed: ``set_random_state`` seed (deterministic output sequence for a fixed seed).
        size: the input's side in pixels (sets the elastic control-grid spacing).
    """
    c = cfg or BigAugConfig()
    keys, img = ("image", "label"), "image"
    grid = max(4, round(c.elastic_spacing * size))
    t = Compose([
        RandFlipd(keys, prob=c.flip_prob, spatial_axis=1),
        RandAffined(keys, prob=c.rotate_prob, rotate_range=math.radians(c.rotate_deg),
                    mode=("bilinear", "nearest"), padding_mode=("border", "zeros")),
        RandZoomd(keys, prob=c.zoom_prob, min_zoom=c.zoom[0], max_zoom=c.zoom[1],
                  mode=("bilinear", "nearest-exact"), padding_mode=("edge", "constant")),
        Rand2DElasticd(keys, spacing=(grid, grid), magnitude_range=c.elastic_magnitude, prob=c.elastic_prob,
                       mode=("bilinear", "nearest"), padding_mode=("border", "zeros")),
        RandBiasFieldZd(img, degree=c.bias_degree, coeff=c.bias_coeff, prob=c.bias_prob),
        RandAdjustContrastd(img, prob=c.gamma_prob, gamma=c.gamma, retain_stats=True),
        RandHistogramShiftd(img, num_control_points=c.histogram_points, prob=c.histogram_prob),
        RandSimulateLowResolutiond(img, prob=c.lowres_prob, zoom_range=c.lowres_zoom, downsample_mode="area",
                                   upsample_mode="bilinear"),
        RandGaussianSmoothd(img, sigma_x=c.blur_sigma, sigma_y=c.blur_sigma, prob=c.blur_prob),
        RandGaussianSharpend(img, alpha=c.sharpen_alpha, prob=c.sharpen_prob),
        RandGibbsNoised(img, alpha=c.gibbs_alpha, prob=c.gibbs_prob),
        RandGaussianNoised(img, prob=c.noise_prob, std=c.noise_std),
        RandScaleIntensityd(img, factors=c.scale, prob=c.scale_prob),
        RandShiftIntensityd(img, offsets=c.shift, prob=c.shift_prob),
    ])
    if seed is not None:
        t.set_random_state(seed=seed)
    return t


def build_transforms(level: str, seed: int | None = None, size: int = 96) -> Compose | None:
    """The training transform of an augmentation level (:data:`AUGMENT_LEVELS`); ``None`` for ``none``.

    Raises:
        ValueError: unknown level.
    """
    if level == "none":
        return None
    if level == "standard":
        return train_transforms(seed=seed)
    if level == "bigaug":
        return bigaug_transforms(seed=seed, size=size)
    raise ValueError(f"augmentation level must be one of {AUGMENT_LEVELS}, got {level!r}")
