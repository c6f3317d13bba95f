"""Optuna ablation harness: ``python -m relkd_bench.ablate`` (see ``__main__`` for the CLI).

Python API::

    from relkd_bench.ablate import load_spec, make_objective, make_storage, run_worker

    spec = load_spec("ablations/modules.yaml")
    store = make_storage(None, spec.name)                   # journal file under runs/studies/<name>/
    run_worker(spec, store, make_objective(spec))           # or any objective(trial, plan) -> float

Modules: ``spec`` (YAML → validated spec), ``plan`` (trial → config overrides), ``storage`` (journal /
sqlite / PostgreSQL + study lock), ``worker`` (claiming, heartbeats, resume), ``objectives`` (engine and
the ``smoke`` self-test). The engine is imported only when the real objective runs.
"""

from relkd_bench.ablate.objectives import (
    engine_objective,
    git_commit,
    hardware,
    make_objective,
    smoke_objective,
)
from relkd_bench.ablate.plan import Objective, TrialPlan, make_plan, method_label
from relkd_bench.ablate.spec import MODULE_SETS, AblationSpec, ParamSpec, cell_key, load_spec, spec_from_dict
from relkd_bench.ablate.storage import StudyStore, make_storage, redact
from relkd_bench.ablate.worker import (
    WorkerSummary,
    attach_live_progress,
    claim,
    fail_stale,
    open_study,
    run_trial,
    run_worker,
)

__all__ = [
    "MODULE_SETS",
    "AblationSpec",
    "Objective",
    "ParamSpec",
    "StudyStore",
    "TrialPlan",
    "WorkerSummary",
    "attach_live_progress",
    "cell_key",
    "claim",
    "engine_objective",
    "fail_stale",
    "git_commit",
    "hardware",
    "load_spec",
    "make_objective",
    "make_plan",
    "make_storage",
    "method_label",
    "open_study",
    "redact",
    "run_trial",
    "run_worker",
    "smoke_objective",
    "spec_from_dict",
]
