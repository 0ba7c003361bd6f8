"""Read a trace back from the Airflow metadata DB, for ``python -m airflow_codeagent trace``."""

from __future__ import annotations

from typing import Any


def read_trace(dag_id: str, task_id: str, *, run_id: str | None = None,
               map_index: int = -1) -> dict[str, Any] | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from airflow_codeagent.operators.codeagent import TRACE_XCOM_KEY

    query = select(XComModel).where(XComModel.dag_id == dag_id, XComModel.task_id == task_id,
                                    XComModel.key == TRACE_XCOM_KEY, XComModel.map_index == map_index)
    if run_id is not None:
        query = query.where(XComModel.run_id == run_id)
    with create_session() as session:
        row = session.scalars(query.order_by(XComModel.timestamp.desc()).limit(1)).first()
        return None if row is None else XComModel.deserialize_value(row)
