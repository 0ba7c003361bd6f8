"""Apply Airflow's secrets masker to a trace before it is written to XCom.

The masker knows every connection password and variable the worker has
fetched; the trace may contain them if a tool returned one. Only string
values are passed through it: its key-name heuristics would also hide
fields such as ``input_tokens``.
"""

from __future__ import annotations

from typing import Any


def _airflow_redact() -> Any:
    try:
        from airflow.sdk._shared.secrets_masker import redact
    except ImportError:  # Airflow 3.1 layout
        from airflow.sdk.execution_time.secrets_masker import redact  # type: ignore[no-redef]
    return redact


def redact_with_airflow_masker(document: Any) -> Any:
    redact = _airflow_redact()

    def walk(value: Any) -> Any:
        if isinstance(value, str):
            return redact(value)
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return value

    return walk(document)
