"""The worker loop: claim a trial under the study lock, run it with a heartbeat, record the outcome.

Why no grid cell runs twice, even with many workers on many machines:

1. Trials are only created or claimed while holding the study lock (:meth:`StudyStore.lock`).
2. Under the lock a worker first fails stale trials (RUNNING, heartbeat older than ``grace``), then
   reconciles the grid: every requested cell without a COMPLETE/PRUNED, RUNNING or WAITING trial (and
   with retries left) is enqueued once with its fixed parameters and ``user_attrs["cell"]``; then it
   takes the first WAITING trial in cell order and marks it RUNNING, writing the first heartbeat.
3. A cell is therefore never enqueued while another trial of it is waiting, running or finished.

Resume is the same reconciliation: rerunning the command skips finished cells (or, for TPE, counts
finished trials against ``n_trials``); a killed worker's trial goes stale, is failed with an ``error``
attribute and its cell is enqueued again. Surviving workers wait for RUNNING trials of others, so a
stale one is picked up without a rerun.

Liveness: :func:`attach_live_progress` prints the package's INFO log records (one line per training
epoch of the teacher and the student, data and teacher preparation) while a trial runs, each prefixed
with the worker and the trial.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TextIO

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.trial import FrozenTrial, TrialState

from relkd_bench.ablate.plan import Objective, TrialPlan, baseline_params, make_plan
from relkd_bench.ablate.spec import AblationSpec, cell_key
from relkd_bench.ablate.storage import StudyStore

__all__ = ["HEARTBEAT_ATTR", "WorkerSummary", "attach_live_progress", "claim", "fail_stale", "open_study",
           "run_trial", "run_worker", "storage_trial_id", "worker_main"]

HEARTBEAT_ATTR = "relkd:heartbeat"
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
Log = Callable[[str], None]
_running: dict[str, int | None] = {"trial": None}  # the trial this process runs now, for the prefix


class _LivePrefix(logging.Filter):
    def __init__(self, worker: str) -> None:
        super().__init__()
        self.worker = worker

    def filter(self, record: logging.LogRecord) -> bool:
        n = _running["trial"]
        record.where = self.worker + (f"trial {n} " if n is not None else "")
        return True


def attach_live_progress(prefix: str = "", stream: TextIO | None = None) -> logging.Handler:
    """Print every INFO record of the ``relkd_bench`` loggers as one line ``<prefix>trial N <message>``
    (e.g. ``[worker 1] trial 3 [student] epoch 4/12 loss 0.4121 val Dice 0.7012 (21.0 s)``)."""
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.addFilter(_LivePrefix(prefix))
    handler.setFormatter(logging.Formatter("%(where)s%(message)s"))
    root = logging.getLogger("relkd_bench")
    for old in [h for h in root.handlers if any(isinstance(f, _LivePrefix) for f in h.filters)]:
        root.removeHandler(old)  # one live handler per process, the latest
    root.setLevel(logging.INFO)
    root.addHandler(handler)
    root.propagate = False
    return handler


@dataclass
class WorkerSummary:
    """What one worker did."""

    ran: int = 0
    complete: int = 0
    pruned: int = 0
    failed: int = 0
    seconds: float = 0.0


def storage_trial_id(store: StudyStore, study: optuna.Study, number: int) -> int:
    """The storage's id of trial ``number`` of ``study``, which the storage's setters take.

    Optuna keeps it in the private ``_trial_id``; this asks the storage through its public API instead
    (study id by name, trial id by number): the one place the worker turns a trial into a storage id.
    """
    study_id = store.storage.get_study_id_from_name(study.study_name)
    return store.storage.get_trial_id_from_study_id_trial_number(study_id, number)


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def open_study(spec: AblationSpec, store: StudyStore, name: str,
               sampler_seed: int | None = None) -> optuna.Study:
    """Create or load the study (maximize source-validation Dice) with the spec's sampler and pruner."""
    if spec.sampler == "grid":
        sampler: optuna.samplers.BaseSampler = optuna.samplers.GridSampler(spec.grid, seed=spec.seed)
    else:
        sampler = optuna.samplers.TPESampler(seed=sampler_seed)
    pruner: optuna.pruners.BasePruner = (optuna.pruners.MedianPruner(**spec.pruner_kwargs())
                                         if spec.pruner["type"] == "median" else optuna.pruners.NopPruner())
    with store.lock(name):
        study = optuna.create_study(storage=store.storage, study_name=name, direction="maximize",
                                    sampler=sampler, pruner=pruner, load_if_exists=True)
        if "spec" not in study.user_attrs:
            study.set_user_attr("spec", {"name": spec.name, "source": spec.source, "sampler": spec.sampler,
                                         "objective": spec.objective, "base": spec.base})
    return study


def fail_stale(study: optuna.Study, store: StudyStore, grace: float) -> list[int]:
    """Fail RUNNING trials whose heartbeat is older than ``grace`` seconds; return their numbers."""
    now, failed = time.time(), []
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        start = t.datetime_start.timestamp() if t.datetime_start else now
        last = float(t.system_attrs.get(HEARTBEAT_ATTR, start))
        if now - last <= grace:
            continue
        try:
            trial_id = storage_trial_id(store, study, t.number)
            store.storage.set_trial_user_attr(
                trial_id, "error", f"stale: no heartbeat for {now - last:.0f} s (worker "
                f"{t.user_attrs.get('worker', '?')} stopped); the cell is retried")
            store.storage.set_trial_state_values(trial_id, TrialState.FAIL)
            failed.append(t.number)
        except UpdateFinishedTrialError:
            pass
    return failed


def _take(study: optuna.Study, store: StudyStore, t: FrozenTrial) -> optuna.Trial | None:
    trial_id = storage_trial_id(store, study, t.number)
    try:
        if not store.storage.set_trial_state_values(trial_id, TrialState.RUNNING):
            return None
    except UpdateFinishedTrialError:
        return None
    store.storage.set_trial_system_attr(trial_id, HEARTBEAT_ATTR, time.time())
    return optuna.Trial(study, trial_id)


def _claim_grid(study: optuna.Study, store: StudyStore, spec: AblationSpec, total: int,
                fail_offset: dict[str, int]) -> optuna.Trial | None:
    by_cell: dict[str, list[FrozenTrial]] = defaultdict(list)
    for t in study.get_trials(deepcopy=False):
        by_cell[t.user_attrs.get("cell", "")].append(t)
    cells = [(cell_key(c), c) for c in spec.cells()[:total]]
    added = False
    for key, cell in cells:
        states = [t.state for t in by_cell[key]]
        if any(s in FINISHED or s in (TrialState.RUNNING, TrialState.WAITING) for s in states):
            continue
        fails = sum(t.state == TrialState.FAIL and not str(t.user_attrs.get("error", "")).startswith(
            ("KeyboardInterrupt", "SystemExit")) for t in by_cell[key])  # Ctrl-C costs no retry
        if fails - fail_offset.get(key, 0) > spec.max_retries:
            continue  # given up on this cell (its errors are in the FAIL trials)
        study.enqueue_trial(cell, user_attrs={"cell": key})
        added = True
    if added:
        by_cell = defaultdict(list)
        for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            by_cell[t.user_attrs.get("cell", "")].append(t)
    for key, _ in cells:
        for t in by_cell[key]:
            if t.state == TrialState.WAITING and (trial := _take(study, store, t)) is not None:
                return trial
    return None


def repeat_of(trials: list[FrozenTrial]) -> dict[int, int]:
    """``{number: earlier number}`` of the COMPLETE trials whose parameters repeat an earlier COMPLETE
    trial's: a sampler that proposes a configuration again gets the earlier run back from the engine, and
    such repeats neither count towards the requested number of trials nor enter the report's tables."""
    first: dict[str, int] = {}
    out: dict[int, int] = {}
    for t in sorted(trials, key=lambda t: t.number):
        if t.state == TrialState.COMPLETE:
            key = repr(sorted(t.params.items()))
            if key in first:
                out[t.number] = first[key]
            else:
                first[key] = t.number
    return out


def repeats(trials: list[FrozenTrial]) -> int:
    """How many finished trials repeat an earlier one's parameters (:func:`repeat_of`)."""
    return len(repeat_of(trials))


def _claim_tpe(study: optuna.Study, store: StudyStore, spec: AblationSpec, total: int) -> optuna.Trial | None:
    trials = study.get_trials(deepcopy=False)
    n_repeats = repeats(trials)
    busy = sum(t.state in FINISHED or t.state == TrialState.RUNNING for t in trials) - n_repeats
    if busy >= total or n_repeats >= total:  # a sampler stuck on one configuration ends the study
        return None
    if not any(t.user_attrs.get("baseline") for t in trials):
        study.enqueue_trial(baseline_params(spec), user_attrs={"baseline": True})
    for t in study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
        if (trial := _take(study, store, t)) is not None:
            return trial
    trial = study.ask()
    store.storage.set_trial_system_attr(storage_trial_id(store, study, trial.number), HEARTBEAT_ATTR,
                                        time.time())
    return trial


def claim(study: optuna.Study, store: StudyStore, spec: AblationSpec, total: int,
          fail_offset: dict[str, int] | None = None) -> optuna.Trial | None:
    """Under the study lock: fail stale trials, then take the next trial to run (``None``: nothing left)."""
    with store.lock(study.study_name):
        fail_stale(study, store, spec.heartbeat["grace"])
        if spec.sampler == "grid":
            return _claim_grid(study, store, spec, total, fail_offset or {})
        return _claim_tpe(study, store, spec, total)


class _Heartbeat(threading.Thread):
    def __init__(self, store: StudyStore, trial_id: int, interval: float) -> None:
        super().__init__(daemon=True, name=f"relkd-heartbeat-{trial_id}")
        self.store, self.trial_id, self.interval, self.stop = store, trial_id, interval, threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.interval):
            try:
                self.store.storage.set_trial_system_attr(self.trial_id, HEARTBEAT_ATTR, time.time())
            except UpdateFinishedTrialError:
                return
            except Exception:  # a storage hiccup must not kill the trial; the next beat retries
                continue


def run_trial(study: optuna.Study, store: StudyStore, spec: AblationSpec, trial: optuna.Trial,
              objective: Objective) -> tuple[FrozenTrial | None, TrialPlan | None]:
    """Run one claimed trial; failures are recorded (``error``/``traceback`` attributes), never raised."""
    beat = _Heartbeat(store, storage_trial_id(store, study, trial.number), spec.heartbeat["interval"])
    beat.start()
    state, value, plan = TrialState.FAIL, None, None
    _running["trial"] = trial.number
    try:
        trial.set_user_attr("worker", worker_id())
        plan = make_plan(trial, spec)
        trial.set_user_attr("method", plan.method)
        value = float(objective(trial, plan))
        state = TrialState.COMPLETE
    except optuna.TrialPruned as exc:
        state = TrialState.PRUNED
        trial.set_user_attr("pruned", str(exc) or "pruned by the median rule")
    except BaseException as exc:
        try:
            trial.set_user_attr("error", f"{type(exc).__name__}: {exc}"[:2000])
            trial.set_user_attr("traceback", "".join(traceback.format_exc(limit=8))[-4000:])
        except UpdateFinishedTrialError:
            pass
        if not isinstance(exc, Exception):  # KeyboardInterrupt, SystemExit: record, then stop
            _tell(study, trial, TrialState.FAIL, None)
            raise
    finally:
        beat.stop.set()
        _running["trial"] = None
    return _tell(study, trial, state, value), plan


def _tell(study: optuna.Study, trial: optuna.Trial, state: TrialState,
          value: float | None) -> FrozenTrial | None:
    try:
        if state == TrialState.COMPLETE:
            return study.tell(trial, value)
        return study.tell(trial, state=state)
    except UpdateFinishedTrialError:
        return None  # another worker failed it as stale meanwhile; its cell is retried


def run_worker(spec: AblationSpec, store: StudyStore, objective: Objective, study_name: str | None = None,
               n_trials: int | None = None, timeout: float | None = None, retry_failed: bool = False,
               log: Log = print, sampler_seed: int | None = None, poll: float | None = None) -> WorkerSummary:
    """Run trials of the study until the requested total is finished (or ``timeout`` seconds passed).

    Args:
        n_trials: requested total of finished trials (grid: the first N cells); ``None`` → the spec's.
        retry_failed: give cells that already failed ``1 + max_retries`` times another round.
        poll: seconds between checks while only other workers' trials are running.
    """
    name = study_name or spec.name
    study = open_study(spec, store, name, sampler_seed)
    total = min(n_trials, spec.total) if n_trials and spec.sampler == "grid" else (n_trials or spec.total)
    offset: dict[str, int] = {}
    if retry_failed:
        for t in study.get_trials(deepcopy=False, states=(TrialState.FAIL,)):
            offset[t.user_attrs.get("cell", "")] = offset.get(t.user_attrs.get("cell", ""), 0) + 1
    poll = poll if poll is not None else min(10.0, spec.heartbeat["interval"])
    summary, t0 = WorkerSummary(), time.time()
    while timeout is None or time.time() - t0 < timeout:
        trial = claim(study, store, spec, total, offset)
        if trial is None:
            if not study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
                break
            time.sleep(poll)  # others are running: wait, so their stale trials get retried here
            continue
        started = time.time()
        what = trial.user_attrs.get("cell") or "sampled"
        log(f"[{study.study_name}] trial {trial.number} started ({what})")
        frozen, plan = run_trial(study, store, spec, trial, objective)
        summary.ran += 1
        state = frozen.state if frozen is not None else TrialState.FAIL
        summary.complete += state == TrialState.COMPLETE
        summary.pruned += state == TrialState.PRUNED
        summary.failed += state == TrialState.FAIL
        log(_line(study, frozen, trial.number, plan, time.time() - started, total))
    summary.seconds = time.time() - t0
    return summary


def worker_main(config: str, url: str | None, name: str, n_trials: int | None, timeout: float | None,
                retry: bool, index: int, progress: bool, live: bool = True) -> WorkerSummary:
    """Entry point of one worker (``--workers K`` starts K of these with ``spawn``; -1: in-process).

    ``progress``: progress bars (one worker only); ``live``: a progress line per training epoch
    (:func:`attach_live_progress`) where there are no bars.
    """
    from relkd_bench.ablate.objectives import make_objective
    from relkd_bench.ablate.spec import load_spec
    from relkd_bench.ablate.storage import make_storage

    signal.signal(signal.SIGTERM, signal.default_int_handler)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = load_spec(config)
    store = make_storage(url, name)
    prefix = f"[worker {index}] " if index >= 0 else ""
    if live:
        attach_live_progress(prefix)
    return run_worker(spec, store, make_objective(spec, progress), name, n_trials, timeout, retry,
                      log=lambda s: print(prefix + s, flush=True),
                      sampler_seed=spec.seed if index <= 0 else None)


def progress_counts(study: optuna.Study) -> dict[str, int]:
    """Trial counts by state name."""
    counts: dict[str, int] = defaultdict(int)
    for t in study.get_trials(deepcopy=False):
        counts[t.state.name] += 1
    return dict(counts)


def _line(study: optuna.Study, frozen: FrozenTrial | None, number: int, plan: TrialPlan | None,
          seconds: float, total: int) -> str:
    c = progress_counts(study)
    what = " ".join(f"{k}={v}" for k, v in (plan.params.items() if plan else ()))
    if frozen is None:
        outcome = "lost (failed as stale by another worker)"
    elif frozen.state == TrialState.COMPLETE:
        ua = frozen.user_attrs
        hd = ua.get("heldout_dice")
        held = f", held-out Dice {hd:.4f}" if isinstance(hd, float) else ""
        outcome = f"val Dice {frozen.value:.4f}{held}"
    elif frozen.state == TrialState.PRUNED:
        outcome = "pruned"
    else:
        outcome = f"FAILED: {frozen.user_attrs.get('error', '?')}"
    done = c.get("COMPLETE", 0) + c.get("PRUNED", 0)
    return (f"[{study.study_name}] trial {number} ({what}): {outcome} in {seconds:.0f} s | "
            f"{done}/{total} finished, {c.get('RUNNING', 0)} running, {c.get('FAIL', 0)} failed")
