"""Provider metadata read by Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""

from __future__ import annotations

from typing import Any


def get_provider_info() -> dict[str, Any]:
    from airflow_codeagent import __version__

    return {
        "package-name": "airflow-codeagent",
        "name": "Code Agent",
        "description": "An LLM agent step that solves its task by writing Python in a sandbox.",
        "versions": [__version__],
        "integrations": [{
            "integration-name": "Code Agent",
            "external-doc-url": "https://pypi.org/project/airflow-codeagent/",
            "tags": ["software"],
        }],
        "operators": [{
            "integration-name": "Code Agent",
            "python-modules": ["airflow_codeagent.operators.codeagent"],
        }],
        "hooks": [{
            "integration-name": "Code Agent",
            "python-modules": ["airflow_codeagent.hooks.litellm"],
        }],
        "connection-types": [{
            "hook-class-name": "airflow_codeagent.hooks.litellm.LiteLLMHook",
            "hook-name": "LiteLLM",
            "connection-type": "litellm",
            "conn-fields": {
                "model": {
                    "label": "Model",
                    "schema": {"type": ["string", "null"]},
                    "description": "litellm model string, e.g. openai/gpt-4o-mini or openai/qwen-coder-1.5b",
                },
            },
            "ui-field-behaviour": {
                "hidden-fields": ["schema", "login", "port"],
                "relabeling": {"host": "API base URL", "password": "API key"},
                "placeholders": {
                    "host": "https://api.openai.com/v1 or http://127.0.0.1:8765/v1",
                    "extra": '{"model": "openai/gpt-4o-mini", "temperature": 0}',
                },
            },
        }],
        "task-decorators": [{
            "name": "codeagent",
            "class-name": "airflow_codeagent.decorators.codeagent.codeagent_task",
        }],
        "extra-links": ["airflow_codeagent.plugins.links.AgentTraceLink"],
    }
