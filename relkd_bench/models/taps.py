"""Forward hooks that capture intermediate features by dotted module name (torchdistill style).

Example::

    with FeatureTap(model, {"enc": "stage3", "dec": "stage4"}) as tap:
        logits = model(x)
    tap.features["enc"]    # output of model.stage3, e.g. [B, 128, H/8, W/8]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

import torch
from torch import nn

__all__ = ["FeatureTap"]


class FeatureTap:
    """Context manager that records the outputs of named submodules during a forward pass.

    Args:
        model: the module to tap.
        modules: either dotted module paths (each is also its own key) or a mapping
            ``key -> dotted module path`` (paths as in ``model.named_modules()``).

    The captured tensors stay in the autograd graph (no ``detach``), so they can feed a loss.
    If a tapped module runs several times in one forward, the last output is kept. A module whose
    output is a tuple/list contributes its first element.

    Raises:
        ValueError: on entering, if a path names no submodule of ``model``.
    """

    def __init__(self, model: nn.Module, modules: Mapping[str, str] | Sequence[str]) -> None:
        self.model = model
        self.paths: dict[str, str] = (
            dict(modules) if isinstance(modules, Mapping) else {str(m): str(m) for m in modules}
        )
        self.features: dict[str, torch.Tensor] = {}
        self._handles: list[torch.utils.hooks.RemovableHandle] = []

    def __enter__(self) -> Self:
        self.features = {}
        try:
            for key, path in self.paths.items():
                module = self._resolve(path)
                self._handles.append(module.register_forward_hook(self._hook(key)))
        except Exception:
            self._remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self._remove()

    def _resolve(self, path: str) -> nn.Module:
        try:
            return self.model.get_submodule(path)
        except AttributeError:
            raise ValueError(
                f"{type(self.model).__name__} has no submodule {path!r} to tap "
                "(use a dotted name from model.named_modules())"
            ) from None

    def _hook(self, key: str):
        def hook(module: nn.Module, args: object, output: object) -> None:
            if isinstance(output, (tuple, list)):
                output = output[0]
            if not isinstance(output, torch.Tensor):
                raise TypeError(f"tapped module {self.paths[key]!r} returned {type(output).__name__}")
            self.features[key] = output

        return hook

    def _remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
