"""Connection tools as the tests use them: by name, or inside a sandbox the way model code sees them."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

from airflow_codeagent.sandbox.executor import Executor, executor_factory
from airflow_codeagent.sandbox.policy import DEFAULT_AUTHORIZED_IMPORTS
from airflow_codeagent.tools.base import Tool, expand_tools


def tools_by_name(*toolkits: Any) -> dict[str, Tool]:
    return {t.name: t for t in expand_tools(list(toolkits))}


@contextlib.contextmanager
def sandbox_with(*toolkits: Any, sandbox: str, step_timeout_s: float = 60) -> Iterator[Executor]:
    """An executor of kind ``sandbox`` whose tools are the toolkits' functions; closed afterwards."""
    executor = executor_factory(sandbox)(
        tools={name: t.func for name, t in tools_by_name(*toolkits).items()}, variables={},
        authorized_imports=DEFAULT_AUTHORIZED_IMPORTS, step_timeout_s=step_timeout_s,
        output_limit_chars=100_000, reraise=())
    try:
        yield executor
    finally:
        executor.close()
