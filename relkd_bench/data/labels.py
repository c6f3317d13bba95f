"""The label map: which mask value on disk is which class of the task.

A task has ``num_classes`` classes, class 0 the background. Its label map is a tuple of
``(mask value, class)`` pairs; mask value 0 is background unless the map says otherwise, and a non-zero
mask value the map does not list is an error (map it to 0 to drop it). ``None`` is the binary default:
any value > 0 is class 1 (the whole gland, e.g. MSD Task05's two zones merged).
"""

from __future__ import annotations

import numpy as np

__all__ = ["LabelMap", "apply_label_map"]

LabelMap = tuple[tuple[int, int], ...]


def apply_label_map(mask: np.ndarray, label_map: LabelMap | None) -> np.ndarray:
    """Classes ``uint8`` of an integer-valued, non-negative ``mask`` (checked by the caller).

    Raises:
        ValueError: ``mask`` holds a non-zero value that ``label_map`` does not list.
    """
    if label_map is None:
        return np.ascontiguousarray(mask > 0, dtype=np.uint8)
    table = dict(label_map)
    present = [int(v) for v in np.unique(mask)]
    unknown = [v for v in present if v != 0 and v not in table]
    if unknown:
        raise ValueError(f"mask values {unknown} are not in the label map {table} "
                         "(data.label_map; map a value to 0 to drop it)")
    out = np.zeros(mask.shape, dtype=np.uint8)
    for value in present:
        cls = table.get(value, 0)
        if cls:
            out[mask == value] = cls
    return out
