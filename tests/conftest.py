from __future__ import annotations

import os

# litellm must use its bundled price table: tests never reach the internet.
os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"

import pytest  # noqa: E402

from airflow_codeagent.testing.scripted_llm import ScriptedLLMServer  # noqa: E402


@pytest.fixture
def llm_server():
    """Start a scripted OpenAI-compatible server on 127.0.0.1; ``llm_server(script)``."""
    servers: list[ScriptedLLMServer] = []

    def start(script=()):
        server = ScriptedLLMServer(script).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()
