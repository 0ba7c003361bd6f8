"""airflow-codeagent: an LLM step in an Airflow DAG that solves its task by writing Python."""

from __future__ import annotations

from airflow_codeagent.agent.loop import AgentRun, CodeAgent
from airflow_codeagent.agent.trace import RunStatus
from airflow_codeagent.models.retry import RetryPolicy
from airflow_codeagent.tools.base import Tool, tool

__version__ = "0.1.0"

__all__ = ["AgentRun", "CodeAgent", "RetryPolicy", "RunStatus", "Tool", "__version__", "tool"]
