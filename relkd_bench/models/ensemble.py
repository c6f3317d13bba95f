"""Ensemble of teachers (e.g. one per source site, as in multi-teacher distillation across sites).

Two ways to get one as the teacher of a run:

- ``teacher.members: K`` (K > 1) with a single-model ``teacher.name``: K copies trained independently
  (a deep ensemble; each selects its epoch on source-site validation), assembled into this class by
  :mod:`relkd_bench.engine.teacher_ensemble`. This is the ensemble teacher of the benchmark.
- ``teacher.name: teacher_ensemble`` (kwargs ``members``, ``num_members``, member kwargs): the ensemble is
  one network trained end to end on the loss of its mean logits, so its members co-adapt instead of
  erring independently; it is K times a single teacher's cost without being an ensemble of
  independent models.

Logits are the mean of the members' logits. Features, per ``reduce``:

- ``"mean"`` (default): ``feats[tap]`` is the mean of the members' features at ``tap``; only taps that
  every member declares with the same channels and stride are available (true when all members share
  an architecture, the one-teacher-per-site case).
- ``"members"``: no averaging; keys ``"member{i}/{tap}"`` for each member ``i`` and its tap.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from relkd_bench.models.base import SegModel, TapSpec
from relkd_bench.models.registry import build_model, register_model

__all__ = ["TeacherEnsemble", "teacher_ensemble"]

_REDUCE = ("mean", "members")


class TeacherEnsemble(SegModel):
    """``[B, C_in, H, W] -> mean_i member_i(x): [B, K, H, W]``.

    Args:
        members: models with equal ``in_channels`` and ``num_classes`` (``SegModel`` instances).
        reduce: ``"mean"`` or ``"members"`` (see the module docstring).

    ``size_multiple`` is the least common multiple of the members'. In ``"mean"`` mode
    ``default_taps`` are the first member's default taps (all must be shared); in ``"members"`` mode
    they are every member's default taps, prefixed.
    """

    def __init__(self, members: Sequence[SegModel], reduce: str = "mean") -> None:
        if not members:
            raise ValueError("TeacherEnsemble needs at least one member")
        if reduce not in _REDUCE:
            raise ValueError(f"reduce must be one of {_REDUCE}, got {reduce!r}")
        for m in members:
            if not isinstance(m, SegModel):
                raise TypeError(f"members must be SegModel instances, got {type(m).__name__}")
        first = members[0]
        super().__init__(first.in_channels, first.num_classes)
        for m in members:
            if (m.in_channels, m.num_classes) != (first.in_channels, first.num_classes):
                raise ValueError("all members need the same in_channels and num_classes")
        self.members = nn.ModuleList(members)
        self.reduce = reduce
        self.size_multiple = math.lcm(*(m.size_multiple for m in members))
        if reduce == "mean":
            shared = {
                t: s for t, s in first.taps.items()
                if all((m.taps.get(t) and (m.taps[t].channels, m.taps[t].stride) == (s.channels, s.stride))
                       for m in members)
            }  # fmt: skip
            self.taps = {t: TapSpec("", s.channels, s.stride) for t, s in shared.items()}
            missing = [t for t in first.default_taps if t not in shared]
            if missing:
                raise ValueError(
                    f"taps {missing} differ in channels/stride between members; use reduce='members'"
                )
            self.default_taps = tuple(first.default_taps)
        else:
            self.taps = {
                f"member{i}/{t}": TapSpec("", s.channels, s.stride)
                for i, m in enumerate(members)
                for t, s in m.taps.items()
            }
            self.default_taps = tuple(f"member{i}/{t}" for i, m in enumerate(members) for t in m.default_taps)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)

    def forward_features(
        self, x: torch.Tensor, taps: Sequence[str] | None = None
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Mean logits ``[B, K, H, W]`` and features (mean per tap, or per-member keys).

        Args:
            x: ``[B, C_in, H, W]``.
            taps: declared tap names (default ``self.default_taps``).
        """
        self.check_input(x)
        names = self.default_taps if taps is None else tuple(taps)
        for t in names:
            self._spec(t)  # clear error for an undeclared tap
        if self.reduce == "mean":
            outs = [m.forward_features(x, names) for m in self.members]
            logits = torch.stack([o[0] for o in outs]).mean(0)
            feats = {t: torch.stack([o[1][t] for o in outs]).mean(0) for t in names}
            return logits, feats
        logits_list, feats = [], {}
        for i, m in enumerate(self.members):
            prefix = f"member{i}/"
            mine = [t[len(prefix) :] for t in names if t.startswith(prefix)]
            z, f = m.forward_features(x, mine)
            logits_list.append(z)
            feats.update({prefix + t: v for t, v in f.items()})
        return torch.stack(logits_list).mean(0), {t: feats[t] for t in names}


@register_model("teacher_ensemble", role="teacher")
def teacher_ensemble(
    members: str | Sequence[str] = "unet_wide",
    num_members: int = 5,
    reduce: str = "mean",
    in_channels: int = 1,
    num_classes: int = 2,
    **member_kwargs,
) -> TeacherEnsemble:
    """Build a :class:`TeacherEnsemble` from registered names.

    Args:
        members: one name (repeated ``num_members`` times, e.g. one teacher per source site: 5 in
            leave-one-site-out over 6 sites) or a sequence of names (``num_members`` is then ignored).
        reduce: feature reduction, ``"mean"`` or ``"members"``.
        in_channels, num_classes, member_kwargs: passed to every member.
    """
    names = [members] * num_members if isinstance(members, str) else list(members)
    return TeacherEnsemble(
        [build_model(n, in_channels=in_channels, num_classes=num_classes, **member_kwargs) for n in names],
        reduce=reduce,
    )
