"""Inspecting a collection: per-site summary table and a figure of one mid-gland slice per site.

Everything goes through the real loader (:func:`~relkd_bench.data.nifti.scan_collection`,
:func:`~relkd_bench.data.nifti.load_case`), for synthetic, real and one-site collections alike.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from relkd_bench.data.nifti import BadCase, DataError, Volume, load_case, scan_collection
from relkd_bench.data.preprocess import to_slices_first

__all__ = ["SiteSummary", "format_table", "plot_midgland", "summarize_collection"]


@dataclass
class SiteSummary:
    """Per-site statistics of a collection (raw intensities, canonical orientation)."""

    site: str
    cases: int = 0
    shapes: list[tuple[int, int, int]] = field(default_factory=list)
    spacings: list[tuple[float, float, float]] = field(default_factory=list)
    percentiles: list[tuple[float, float, float]] = field(default_factory=list)  # p1, p50, p99 per case
    volumes_ml: list[float] = field(default_factory=list)
    example: Volume | None = None


def summarize_collection(root: str | Path, site_name: str | None = None, skip_bad: bool = False,
                         ) -> tuple[list[SiteSummary], list[BadCase]]:
    """Load every case of ``root`` (collection root or one-site folder) and collect per-site statistics.

    The case with the largest prostate of each site is kept as ``example`` for :func:`plot_midgland`.
    """
    cases, bad = scan_collection(root, skip_bad=skip_bad, site_name=site_name)
    summaries: dict[str, SiteSummary] = {}
    for ref in cases:
        try:
            vol = load_case(ref)
        except DataError as err:
            if not skip_bad:
                raise
            bad.append(BadCase.from_error(err))
            continue
        s = summaries.setdefault(ref.site, SiteSummary(ref.site))
        s.cases += 1
        s.shapes.append(tuple(int(n) for n in vol.image.shape))
        s.spacings.append(tuple(round(float(v), 3) for v in vol.spacing))
        s.percentiles.append(tuple(float(v) for v in np.percentile(vol.image, (1, 50, 99))))
        s.volumes_ml.append(vol.mask_volume_ml)
        if s.example is None or vol.mask_volume_ml > s.example.mask_volume_ml:
            s.example = vol
    return list(summaries.values()), bad


def _range(values: list, fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}–{format(hi, fmt)}"


def format_table(summaries: list[SiteSummary]) -> str:
    """Markdown table: cases, shapes, spacing (mm), intensity p1/p50/p99 (medians over cases), prostate mL."""
    rows = ["| site | cases | shape (X×Y×Z) | spacing mm (x, y, z) | intensity p1 / p50 / p99 | prostate mL "
            "mean ± sd (min–max) |", "|---|---|---|---|---|---|"]
    for s in summaries:
        shapes = sorted(set(s.shapes))
        shape = "×".join(map(str, shapes[0])) if len(shapes) == 1 else f"{len(shapes)} shapes"
        sp = np.asarray(s.spacings)
        spacing = ", ".join(_range(list(sp[:, i]), ".3g") for i in range(3))
        p = np.median(np.asarray(s.percentiles), axis=0)
        v = np.asarray(s.volumes_ml)
        rows.append(f"| {s.site} | {s.cases} | {shape} | {spacing} | {p[0]:.4g} / {p[1]:.4g} / {p[2]:.4g} | "
                    f"{v.mean():.1f} ± {v.std():.1f} ({v.min():.1f}–{v.max():.1f}) |")
    return "\n".join(rows)


def plot_midgland(summaries: list[SiteSummary], out_png: str | Path, title: str | None = None) -> Path:
    """PNG with one mid-gland axial slice per site (radiological view) and the prostate outline."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = max(1, len(summaries))
    fig, axes = plt.subplots(1, n, figsize=(3.0 * n, 3.4), squeeze=False)
    for ax, s in zip(axes[0], summaries, strict=False):
        vol = s.example
        ax.axis("off")
        if vol is None:
            continue
        image, mask = to_slices_first(vol.image), to_slices_first(vol.mask)
        area = mask.reshape(mask.shape[0], -1).sum(1)
        z = int(np.argmax(area)) if area.any() else mask.shape[0] // 2
        sx, sy, _ = vol.spacing
        sl = image[z]
        ax.imshow(sl, cmap="gray", vmin=np.percentile(sl, 1), vmax=np.percentile(sl, 99.5),
                  aspect=sy / sx, interpolation="nearest")
        if mask[z].any():
            ax.contour(mask[z], levels=[0.5], colors="red", linewidths=0.8)
        ax.set_title(f"{s.site} {vol.ref.case_id}\nslice {z}, {vol.mask_volume_ml:.0f} mL", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png = Path(out_png)
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=110)
    plt.close(fig)
    return out_png
