"""Two worker processes share one study in PostgreSQL (needs RELKD_TEST_POSTGRES_URL; CI: .ci/postgres.sh)."""

from __future__ import annotations

import collections
import os
import subprocess
import sys
import uuid
from pathlib import Path
from urllib.parse import urlsplit

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from relkd_bench.ablate import make_storage

URL = os.environ.get("RELKD_TEST_POSTGRES_URL")
pytestmark = pytest.mark.skipif(not URL, reason="RELKD_TEST_POSTGRES_URL not set (CI starts .ci/postgres.sh)")
REPO = Path(__file__).resolve().parents[1]
MODULES = ["none", "LM", "KM", "AA", "LM+KM", "LM+AA", "KM+AA", "LM+KM+AA"]


@pytest.fixture
def empty_schema_url():
    """The server's URL pointed at a new, empty schema: the first workers must create Optuna's tables."""
    from sqlalchemy import create_engine, text

    schema = f"relkd_test_{uuid.uuid4().hex[:8]}"
    engine = create_engine(URL.replace("postgresql://", "postgresql+psycopg2://", 1))
    with engine.begin() as conn:
        conn.execute(text(f"CREATE SCHEMA {schema}"))
    sep = "&" if "?" in URL else "?"
    try:
        yield f"{URL}{sep}options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(text(f"DROP SCHEMA {schema} CASCADE"))
        engine.dispose()


def test_two_workers_share_a_postgres_study_without_duplicates(tmp_path, empty_schema_url):
    # Both workers start at once on an empty database: creating Optuna's tables must not race.
    url = empty_schema_url
    name = f"pgtest_{uuid.uuid4().hex[:8]}"
    spec = tmp_path / "pg.yaml"
    spec.write_text(yaml.safe_dump({"name": name, "objective": "smoke", "smoke": {"seconds": 0.3},
                                    "grid": {"seed": [0, 1], "modules": MODULES},
                                    "heartbeat": {"interval": 1, "grace": 30}}))
    env = {k: v for k, v in os.environ.items() if k != "RELKD_TEST_POSTGRES_URL"}
    # worker A gets the URL through the environment, worker B on its command line (both must stay silent)
    cmds = [([], {**env, "RELKD_STORAGE": url}), (["--storage", url], env)]
    cli = [sys.executable, "-m", "relkd_bench.ablate", "--config", str(spec), "--no-report", "--workers", "1"]
    procs = [subprocess.Popen([*cli, *extra], cwd=tmp_path, env=e, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for extra, e in cmds]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    store = make_storage(url, name)
    try:
        for p, out in zip(procs, outs):
            assert p.returncode == 0, out
        password = urlsplit(url).password
        assert password and all(password not in out for out in outs)
        assert all("***" in out for out in outs)  # the masked location is shown instead
        study = optuna.load_study(study_name=name, storage=store.storage)
        cells = [t.user_attrs["cell"] for t in study.trials]
        complete = study.get_trials(states=(TrialState.COMPLETE,))
        assert len(complete) == len(study.trials) == 16  # finished == requested, nothing extra
        assert max(collections.Counter(cells).values()) == 1  # no grid cell ran twice
        workers = {t.user_attrs["worker"] for t in complete}
        assert len(workers) == 2, workers  # both processes did work
    finally:
        optuna.delete_study(study_name=name, storage=store.storage)
