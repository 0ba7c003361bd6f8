from __future__ import annotations

import os

# litellm must use its bundled price table: tests never reach the internet.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

# Airflow reads its configuration once, at import: point it at a temp home first.
from tests.integration.airflow_env import configure  # noqa: E402

configure()

import pytest  # noqa: E402

from airflow_codeagent.testing.scripted_llm import ScriptedLLMServer  # noqa: E402


@pytest.fixture
def llm_server():
    """Start a scripted OpenAI-compatible server on 127.0.0.1; ``llm_server(script)``."""
    servers: list[ScriptedLLMServer] = []

    def start(script=(), **options):
        server = ScriptedLLMServer(script, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def airflow_db():
    """A fresh SQLite metadata DB in the temp AIRFLOW_HOME, created once per session."""
    from airflow.utils.db import resetdb

    resetdb()


@pytest.fixture(scope="session")
def test_dags(airflow_db):
    from tests.integration.airflow_env import TEST_DAGS, dag_bag

    bag = dag_bag(TEST_DAGS)
    assert not bag.import_errors, bag.import_errors
    return bag


@pytest.fixture
def xcoms(airflow_db):
    """Read a DAG run's XComs back from the metadata DB: {(task_id, key, map_index): value}."""
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    def read(dag_id: str, run_id: str) -> dict:
        with create_session() as session:
            rows = session.scalars(select(XComModel).where(XComModel.dag_id == dag_id,
                                                           XComModel.run_id == run_id))
            return {(r.task_id, r.key, r.map_index): XComModel.deserialize_value(r) for r in rows}

    return read
