"""The harness with injected fake objectives (no training): resume, failures, baseline, stale trials, CLI."""

from __future__ import annotations

import collections
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from relkd_bench.ablate import claim, make_storage, open_study, redact, run_worker, spec_from_dict
from relkd_bench.ablate.worker import HEARTBEAT_ATTR, storage_trial_id

REPO = Path(__file__).resolve().parents[1]
MODS = ["none", "LM", "KM", "AA"]


def _spec(**kw):
    data = {"name": "t", "objective": "smoke", "grid": {"seed": [0, 1], "modules": MODS},
            "heartbeat": {"interval": 0.2, "grace": 1.0}, **kw}
    return spec_from_dict(data)


class Fake:
    """Objective that records what it ran and fails on chosen module sets."""

    def __init__(self, fail: tuple[str, ...] = ()) -> None:
        self.cells: list[str] = []
        self.fail = fail

    def __call__(self, trial: optuna.Trial, plan) -> float:
        self.cells.append(plan.cell)
        if plan.params.get("modules") in self.fail:
            raise RuntimeError(f"boom in {plan.cell}")
        trial.set_user_attr("heldout_dice", 0.5)
        return 0.6 + 0.01 * len(plan.method)


def _cells(study, state=TrialState.COMPLETE):
    return [t.user_attrs["cell"] for t in study.get_trials(states=(state,))]


def test_resume_does_not_redo_finished_trials(tmp_path):
    spec, store, fake = _spec(), make_storage(str(tmp_path / "j.log"), "t"), Fake()
    s1 = run_worker(spec, store, fake, n_trials=3, log=lambda s: None)
    assert s1.complete == 3 and len(fake.cells) == 3
    first = list(fake.cells)
    s2 = run_worker(spec, store, fake, log=lambda s: None)  # rerun: only the missing five
    assert s2.complete == 5 and len(fake.cells) == 8 and not set(first) & set(fake.cells[3:])
    study = optuna.load_study(study_name="t", storage=store.storage)
    assert sorted(_cells(study)) == sorted(set(fake.cells)) and len(study.trials) == 8
    assert study.trials[0].params["modules"] == "none"  # the baseline is enqueued first
    assert run_worker(spec, store, fake, log=lambda s: None).ran == 0


def test_failed_trials_are_recorded_and_the_study_goes_on(tmp_path):
    spec, store, fake = _spec(max_retries=1), make_storage(str(tmp_path / "j.log"), "t"), Fake(fail=("KM",))
    summary = run_worker(spec, store, fake, log=lambda s: None)
    assert summary.complete == 6 and summary.failed == 4  # 2 KM cells x (1 + max_retries) attempts
    study = optuna.load_study(study_name="t", storage=store.storage)
    failed = study.get_trials(states=(TrialState.FAIL,))
    assert all("RuntimeError: boom in" in t.user_attrs["error"] and t.user_attrs["traceback"] for t in failed)
    assert run_worker(spec, store, fake, log=lambda s: None).ran == 0  # given up until --retry-failed
    assert run_worker(spec, store, Fake(), retry_failed=True, log=lambda s: None).complete == 2
    assert len(set(_cells(study))) == len(_cells(study)) == 8


def test_stale_trial_of_a_killed_worker_is_retried(tmp_path):
    spec, store = _spec(), make_storage(str(tmp_path / "j.log"), "t")
    study = open_study(spec, store, "t")
    lost = claim(study, store, spec, spec.total)  # a worker claims the baseline cell, then "dies"
    store.storage.set_trial_system_attr(storage_trial_id(store, study, lost.number), HEARTBEAT_ATTR,
                                        time.time() - 60)
    fake = Fake()
    run_worker(spec, store, fake, log=lambda s: None)
    trials = optuna.load_study(study_name="t", storage=store.storage).trials
    assert trials[0].state == TrialState.FAIL and "stale" in trials[0].user_attrs["error"]
    assert sorted(_cells(study)) == sorted(fake.cells) and len(fake.cells) == 8


@pytest.mark.parametrize("kind", ["journal", "sqlite"])
def test_storage_trial_id_names_the_trial_the_storage_setters_change(tmp_path, kind):
    """The worker's only bridge from a trial to the storage's id: if Optuna changes how ids are found,
    this fails here, not as a wrong trial failed or claimed in a running study."""
    url = str(tmp_path / "j.log") if kind == "journal" else f"sqlite:///{tmp_path}/s.db"
    store, other = make_storage(url, "t"), None
    other = optuna.create_study(study_name="other", storage=store.storage)
    other.ask()  # ids of another study's trials come first: number != id
    study = optuna.create_study(study_name="t", storage=store.storage)
    trials = [study.ask() for _ in range(3)]
    for t in trials:
        trial_id = storage_trial_id(store, study, t.number)
        store.storage.set_trial_user_attr(trial_id, "mark", t.number)
        assert optuna.Trial(study, trial_id).number == t.number
    assert [t.user_attrs["mark"] for t in study.get_trials()] == [0, 1, 2]
    assert not other.get_trials()[0].user_attrs


def test_tpe_enqueues_the_baseline_and_respects_the_total(tmp_path):
    spec = spec_from_dict({"name": "w", "objective": "smoke", "sampler": "tpe", "n_trials": 4,
                           "search_space": {"distill.lambda_km": {"type": "float", "low": 0.01, "high": 1.0,
                                                                  "log": True, "off_switch": True}}})
    store, plans = make_storage(str(tmp_path / "j.log"), "w"), []
    run_worker(spec, store, lambda trial, plan: plans.append(plan) or 0.5, log=lambda s: None)
    run_worker(spec, store, lambda trial, plan: plans.append(plan) or 0.5, log=lambda s: None)
    from relkd_bench.ablate.worker import repeats

    assert plans[0].baseline and plans[0].overrides["distill.lambda_km"] == 0.0
    distinct = {repr(sorted(p.params.items())) for p in plans}  # a repeat of "off" adds no budget
    n_repeats = repeats(optuna.load_study(study_name="w", storage=store.storage).get_trials())
    assert len(plans) == len(distinct) + n_repeats
    assert len(distinct) == 4 or n_repeats >= 4  # the total, unless the sampler got stuck on "off"


def test_pruning_records_a_pruned_trial(tmp_path):
    spec = _spec(pruner={"type": "median", "n_startup_trials": 1, "n_warmup_steps": 0})

    def objective(trial, plan):
        for epoch in range(3):
            trial.report(0.9 if plan.baseline else 0.1, epoch)
            if trial.should_prune():
                raise optuna.TrialPruned("low")
        return 0.9

    summary = run_worker(spec, make_storage(str(tmp_path / "j.log"), "t"), objective, log=lambda s: None)
    assert summary.pruned > 0 and summary.complete + summary.pruned == 8


def test_storage_urls_and_redaction(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("RELKD_STORAGE", raising=False)
    assert make_storage(None, "s").display == "journal:runs/studies/s/journal.log"
    assert make_storage(f"sqlite:///{tmp_path}/x.db", "s").kind == "sqlite"
    assert redact("postgresql://u:s3cret@h:5/db and x") == "postgresql://u:***@h:5/db and x"
    with pytest.raises(ValueError, match="unsupported storage 'mysql://u:\\*\\*\\*@h/db'"):
        make_storage("mysql://u:pw@h/db", "s")


def _cli(args, cwd, **kw):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    env.pop("RELKD_STORAGE", None)
    return subprocess.Popen([sys.executable, "-m", "relkd_bench.ablate", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _smoke_yaml(tmp_path, seconds, modules=MODS, seeds=(0, 1)):
    path = tmp_path / "smoke.yaml"
    path.write_text(yaml.safe_dump({"name": "smoke", "objective": "smoke", "smoke": {"seconds": seconds},
                                    "grid": {"seed": list(seeds), "modules": modules},
                                    "heartbeat": {"interval": 0.3, "grace": 1.5}}))
    return path


def test_cli_help():
    out = subprocess.run([sys.executable, "-m", "relkd_bench.ablate", "--help"], capture_output=True,
                         text=True, cwd=REPO)
    assert out.returncode == 0 and "--workers" in out.stdout and "optuna-dashboard" in out.stdout


def _running_trials(tmp_path):
    store = make_storage(None, "smoke", tmp_path / "runs")
    study = optuna.load_study(study_name="smoke", storage=store.storage)
    return study.get_trials(states=(TrialState.RUNNING,))


def test_cli_two_local_workers_then_killed_worker_resumes(tmp_path):
    spec = _smoke_yaml(tmp_path, 0.05)
    out = _cli(["--config", str(spec), "--workers", "2", "--no-report", "--n-trials", "6"], tmp_path)
    text = out.communicate(timeout=60)[0]
    assert out.returncode == 0, text
    assert "[worker 0]" in text and "[worker 1]" in text
    # a worker killed mid-trial (SIGKILL: no cleanup at all), then the same command again
    spec = _smoke_yaml(tmp_path, 1.5)
    proc = _cli(["--config", str(spec), "--no-report", "--workers", "1"], tmp_path)
    time.sleep(1.0)
    deadline = time.monotonic() + 60
    while not _running_trials(tmp_path):  # a worker that exits or stalls fails the test, never hangs it
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"no trial started within 60 s (worker exit code {proc.wait()}):\n"
                        f"{proc.communicate()[0]}")
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    again = _cli(["--config", str(spec), "--no-report", "--workers", "1"], tmp_path)
    text = again.communicate(timeout=60)[0]
    assert again.returncode == 0, text
    assert "6 already finished" in text
    store = make_storage(None, "smoke", tmp_path / "runs")
    study = optuna.load_study(study_name="smoke", storage=store.storage)
    done = [t.user_attrs["cell"] for t in study.get_trials(states=(TrialState.COMPLETE,))]
    assert len(done) == len(set(done)) == 8
    stale = study.get_trials(states=(TrialState.FAIL,))
    assert len(stale) == 1 and "stale" in stale[0].user_attrs["error"]
    counts = collections.Counter(t.user_attrs["cell"] for t in study.trials)
    assert counts[stale[0].user_attrs["cell"]] == 2 and max(counts.values()) == 2


def test_live_progress_lines_carry_worker_and_trial(tmp_path):
    """Each epoch line logged during a trial is printed at once, prefixed with the worker and the trial."""
    import io
    import logging

    from relkd_bench.ablate import attach_live_progress

    out = io.StringIO()
    handler = attach_live_progress("[worker 1] ", stream=out)
    root = logging.getLogger("relkd_bench")
    try:
        def objective(trial, plan):
            logging.getLogger("relkd_bench.engine.trainer").info("[student] epoch 1/2 loss 0.5000")
            return 0.5

        lines = []
        store = make_storage(str(tmp_path / "j.log"), "t")
        run_worker(_spec(), store, objective, n_trials=2, log=lines.append)
    finally:
        root.removeHandler(handler)
        root.propagate = True
        root.setLevel(logging.NOTSET)
    assert out.getvalue().splitlines() == ["[worker 1] trial 0 [student] epoch 1/2 loss 0.5000",
                                           "[worker 1] trial 1 [student] epoch 1/2 loss 0.5000"]
    assert lines[0] == "[t] trial 0 started (seed=0|modules=none)"


def test_best_trial_of_a_search_becomes_a_named_method(tmp_path):
    """--best: the best trial by the objective (source validation), its searched keys as overrides."""
    from relkd_bench.ablate.best import best_method, methods_yaml

    km = {"type": "float", "low": 0.01, "high": 1.0, "log": True, "off_switch": True}
    space = {"distill.lambda_km": km,
             "distill.temperature": {"type": "float", "low": 1.0, "high": 8.0}}
    spec = spec_from_dict({"name": "w", "objective": "smoke", "sampler": "tpe", "n_trials": 5, "seed": 3,
                           "overrides": {"data.heldout": "HK"}, "search_space": space})
    store = make_storage(str(tmp_path / "j.log"), "w")
    run_worker(spec, store, lambda trial, plan: plan.overrides["distill.temperature"], log=lambda s: None)
    study = optuna.load_study(study_name="w", storage=store.storage)
    best, overrides = best_method(study, spec)
    assert best.value == max(t.value for t in study.trials)
    assert set(overrides) == {"distill.lambda_km", "distill.temperature"}  # not the fixed data.heldout
    assert overrides["distill.temperature"] == best.value
    block = yaml.safe_load(methods_yaml(study, spec, "tuned"))
    assert block == {"methods": {"tuned": overrides}}
    spec_from_dict({"name": "e", "objective": "smoke", **block, "grid": {"method": ["no-KD", "tuned"]}})
    with pytest.raises(ValueError, match="search study"):
        best_method(study, _spec())


def test_repeated_configurations_do_not_count_towards_the_trials(tmp_path):
    """A sampler that proposes a finished configuration again gets no extra budget from it."""
    from relkd_bench.ablate.worker import repeats
    from relkd_bench.report.collect import DUPLICATE, rows_from_study

    space = {"distill.temperature": {"type": "float", "low": 1.0, "high": 8.0}}
    spec = spec_from_dict({"name": "r", "objective": "smoke", "sampler": "tpe", "n_trials": 3,
                           "search_space": space})
    store = make_storage(str(tmp_path / "j.log"), "r")
    study = open_study(spec, store, "r", 0)
    for _ in range(3):
        study.enqueue_trial({"distill.temperature": 2.0})
    run_worker(spec, store, lambda trial, plan: 0.5, log=lambda s: None)
    trials = optuna.load_study(study_name="r", storage=store.storage).get_trials()
    assert repeats(trials) == 2 and len(trials) == 5  # 3 distinct configurations were run
    rows = rows_from_study(optuna.load_study(study_name="r", storage=store.storage))
    dup = [r for r in rows if r["state"] == DUPLICATE]
    assert len(dup) == 2 and {r["duplicate_of"] for r in dup} == {min(r["number"] for r in dup) - 1}
