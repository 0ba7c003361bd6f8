"""A real Airflow for the tests: temp AIRFLOW_HOME, SQLite metadata DB, two DAG bundles.

Imported by the top-level conftest before anything imports Airflow, because
Airflow reads its configuration once, at import.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
TEST_DAGS = Path(__file__).resolve().parent / "dags"
EXAMPLE_DAGS = REPO / "dags_examples"

LOCAL_BUNDLE = "airflow.dag_processing.bundles.local.LocalDagBundle"


def configure() -> Path:
    home = Path(tempfile.mkdtemp(prefix="codeagent-airflow-"))
    os.environ["AIRFLOW_HOME"] = str(home)
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(TEST_DAGS)
    os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
    os.environ["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"] = f"sqlite:///{home / 'airflow.db'}"
    os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = json.dumps([
        {"name": "test-dags", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(TEST_DAGS)}},
        {"name": "examples", "classpath": LOCAL_BUNDLE, "kwargs": {"path": str(EXAMPLE_DAGS)}},
    ])
    os.environ["CODEAGENT_REPORT_DIR"] = str(home / "reports")
    os.environ["CODEAGENT_REPLAY_DIR"] = str(home / "replay")
    return home


def dag_bag(path: Path) -> Any:
    """The DAGs under ``path``; DagBag moved to airflow.dag_processing in Airflow 3.2."""
    try:
        from airflow.dag_processing.dagbag import DagBag
    except ImportError:  # Airflow 3.1
        from airflow.models.dagbag import DagBag
    return DagBag(str(path))
