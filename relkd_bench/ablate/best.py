"""The best trial of a tuning study as a named method: ``python -m relkd_bench.ablate --best NAME``.

A TPE study picks its best trial by the objective alone (source-validation Dice, never a held-out score).
:func:`best_method` turns that trial's parameters into the config overrides they stand for (a λ switched
off is 0) and :func:`methods_yaml` writes them as a ``methods:`` entry, so that another spec can evaluate
the tuned settings on other folds and seeds (``ablations/loss_weights_eval.yaml``).
"""

from __future__ import annotations

from typing import Any

import optuna
import yaml

from relkd_bench.ablate.plan import make_plan
from relkd_bench.ablate.spec import ALIASES, AblationSpec

__all__ = ["best_method", "methods_yaml"]


def best_method(study: optuna.Study, spec: AblationSpec) -> tuple[optuna.trial.FrozenTrial, dict[str, Any]]:
    """The best finished trial and the overrides of the searched keys it chose.

    Raises:
        ValueError: the spec is not a search (``sampler: tpe``) or no trial has finished.
    """
    if spec.sampler != "tpe":
        raise ValueError(f"--best needs a search study (sampler: tpe); {spec.name!r} is a {spec.sampler} "
                         "study")
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE and t.value is not None]
    if not done:
        raise ValueError(f"study {study.study_name!r} has no finished trial yet")
    best = max(done, key=lambda t: (t.value, -t.number))  # ties: the earlier trial
    plan = make_plan(optuna.trial.FixedTrial(dict(best.params)), spec)
    keys = {ALIASES.get(name, name) for name in spec.search_space}
    return best, {k: v for k, v in plan.overrides.items() if k in keys}


def methods_yaml(study: optuna.Study, spec: AblationSpec, name: str = "tuned") -> str:
    """A ``methods:`` block naming the best trial's settings ``name``, with where they came from."""
    best, overrides = best_method(study, spec)
    states = [t.state for t in study.trials]
    State = optuna.trial.TrialState
    complete, pruned = states.count(State.COMPLETE), states.count(State.PRUNED)
    head = (f"# the best of the {complete} complete trials ({pruned} pruned) of study {study.study_name!r}: "
            f"trial {best.number}, source-validation Dice {best.value:.4f} ({spec.source})\n")
    return head + yaml.safe_dump({"methods": {name: overrides}}, sort_keys=False)
