"""Trial → plan: draw a trial's parameters and turn them into dotted config overrides."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import optuna

from relkd_bench.ablate.spec import (
    ALIASES,
    MODULES,
    AblationSpec,
    canonical_method,
    cell_key,
    is_baseline,
    method_overrides,
)

__all__ = ["Objective", "TrialPlan", "baseline_params", "effective_lambdas", "make_plan", "method_label"]


@dataclass(frozen=True)
class TrialPlan:
    """What one trial runs.

    Attributes:
        number: Optuna trial number.
        params: effective parameter values (a λ that is switched off is 0.0).
        overrides: dotted config overrides (the spec's overrides, then the parameters).
        cell: grid cell key (grid studies), else ``None``.
        baseline: the no-KD baseline (all λ = 0).
        lambdas: the effective λ of each module (``LM``, ``KM``, ``AA``): the base config with the
            overrides applied, so a λ that comes from the base preset counts.
        named_method: the named method of a ``method`` axis (``SKD``, a spec's own method, …), else ``None``.
    """

    number: int
    params: dict[str, Any]
    overrides: dict[str, Any] = field(default_factory=dict)
    cell: str | None = None
    baseline: bool = False
    lambdas: dict[str, float] = field(default_factory=dict)
    named_method: str | None = None

    @property
    def method(self) -> str:
        """The named method of a ``method`` axis (``SKD``, …), else the module-set label of the effective
        λs (``none``, ``LM``, …, ``LM+KM+AA``)."""
        return self.named_method or method_label(self.lambdas)


#: An objective gets the live trial (for ``report``/``should_prune``/``set_user_attr``) and its plan,
#: and returns the source-validation Dice (never a held-out score).
Objective = Callable[[optuna.Trial, TrialPlan], float]


def method_label(lambdas: Mapping[str, float]) -> str:
    """``{"LM": 1, "KM": 0, "AA": 0.5}`` → ``"LM+AA"``; all zero → ``"none"``."""
    return "+".join(m for m in MODULES if lambdas.get(m, 0.0) > 0) or "none"


def effective_lambdas(base: str, overrides: Mapping[str, Any]) -> dict[str, float]:
    """λ of each module in ``load_config(base, overrides)``: what the trial trains with."""
    from relkd_bench.config import load_config  # config is earlier in the flow

    distill = load_config(base, dict(overrides)).distill
    return {m: float(getattr(distill, key.split(".", 1)[1])) for m, key in MODULES.items()}


def baseline_params(spec: AblationSpec) -> dict[str, Any]:
    """Fixed parameters of the enqueued no-KD baseline trial of a TPE study (every switch off)."""
    return {f"{name}:on": False for name, p in spec.search_space.items() if p.off_switch}


def _overrides(spec: AblationSpec, params: Mapping[str, Any], baseline: bool) -> dict[str, Any]:
    out = dict(spec.overrides)
    for name, value in params.items():
        if name == spec.module_axis:
            out.update(method_overrides(value, spec.module_weights, spec.all_methods))
        else:
            out[ALIASES.get(name, name)] = value
    if baseline:
        out.update({key: 0.0 for key in MODULES.values()})
    return out


def make_plan(trial: optuna.Trial, spec: AblationSpec) -> TrialPlan:
    """Suggest the trial's parameters (fixed ones come from the enqueued cell) and build its plan."""
    params: dict[str, Any] = {}
    cell = None
    baseline = bool(trial.user_attrs.get("baseline"))
    if spec.sampler == "grid":
        axes = list(spec.cells()[0])
        params = {axis: trial.suggest_categorical(axis, list(spec.grid[axis])) for axis in axes}
        cell = cell_key(params)
        baseline = is_baseline(params[spec.module_axis], spec.all_methods)
    else:
        for name, p in spec.search_space.items():
            if p.requires and not params.get(p.requires):
                continue
            if p.off_switch and not trial.suggest_categorical(f"{name}:on", [True, False]):
                params[name] = 0.0
                continue
            params[name] = p.suggest(trial, name)
    overrides = _overrides(spec, params, baseline)
    name = canonical_method(params["method"], spec.all_methods) if "method" in params else None
    named = name if name in spec.all_methods else None
    return TrialPlan(trial.number, params, overrides, cell, baseline, effective_lambdas(spec.base, overrides),
                     named)
