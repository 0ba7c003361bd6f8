"""The default model connection pointed at a scripted server on 127.0.0.1, for DAG tests."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator

from airflow_codeagent.testing.scripted_llm import ScriptEntry, ScriptedLLMServer

CONNECTION_VARIABLE = "AIRFLOW_CONN_LITELLM_DEFAULT"


@contextlib.contextmanager
def scripted_model_connection(script: list[ScriptEntry] | None = None, *, password: str | None = None,
                              model: str = "openai/scripted-model") -> Iterator[ScriptedLLMServer]:
    """Serve ``script`` and point ``litellm_default`` at it; the previous connection is restored."""
    connection = {"conn_type": "litellm", "extra": {"model": model, "temperature": 0}}
    with ScriptedLLMServer(script or []) as server:
        connection["host"] = server.api_base
        if password:
            connection["password"] = password
        previous = os.environ.get(CONNECTION_VARIABLE)
        os.environ[CONNECTION_VARIABLE] = json.dumps(connection)
        try:
            yield server
        finally:
            if previous is None:
                del os.environ[CONNECTION_VARIABLE]
            else:
                os.environ[CONNECTION_VARIABLE] = previous
