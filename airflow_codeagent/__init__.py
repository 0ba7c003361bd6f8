"""airflow-codeagent: an LLM step in an Airflow DAG that solves its task by writing Python.

``CodeAgent`` and ``tool`` work without Airflow; the Airflow names are
imported on first use so that ``import airflow_codeagent`` stays light.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from airflow_codeagent.agent.loop import AgentRun, CodeAgent
from airflow_codeagent.agent.trace import RunStatus
from airflow_codeagent.models.retry import RetryPolicy
from airflow_codeagent.tools.base import Tool, tool

if TYPE_CHECKING:
    from airflow_codeagent.decorators.codeagent import codeagent_task
    from airflow_codeagent.hooks.litellm import LiteLLMHook
    from airflow_codeagent.operators.codeagent import CodeAgentOperator
    from airflow_codeagent.tools.hook import hook_tool
    from airflow_codeagent.tools.object_storage import ObjectStorageTool
    from airflow_codeagent.tools.sql import SQLTool

__version__ = "0.1.0"

__all__ = ["AgentRun", "CodeAgent", "CodeAgentOperator", "LiteLLMHook", "ObjectStorageTool", "RetryPolicy",
           "RunStatus", "SQLTool", "Tool", "__version__", "codeagent_task", "hook_tool", "tool"]

_AIRFLOW_NAMES = {
    "CodeAgentOperator": "airflow_codeagent.operators.codeagent",
    "LiteLLMHook": "airflow_codeagent.hooks.litellm",
    "codeagent_task": "airflow_codeagent.decorators.codeagent",
    "SQLTool": "airflow_codeagent.tools.sql",
    "ObjectStorageTool": "airflow_codeagent.tools.object_storage",
    "hook_tool": "airflow_codeagent.tools.hook",
}


def __getattr__(name: str) -> Any:
    if name in _AIRFLOW_NAMES:
        from importlib import import_module

        return getattr(import_module(_AIRFLOW_NAMES[name]), name)
    raise AttributeError(f"module 'airflow_codeagent' has no attribute {name!r}")
