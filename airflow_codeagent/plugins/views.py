"""Routes of the trace view: two page shells, their JSON, and the static assets.

The JSON endpoints read the trace XCom straight from the metadata DB with the
API server's own session, the way Airflow's ``/xcomEntries`` endpoint does
(``XComModel`` rows; a custom XCom backend's references are not resolved
there either). Going through the public REST API instead would mean an HTTP
call from the API server to itself, forwarding the user's token, to get the
same row back. Access is Airflow's own check: ``requires_access_dag("GET",
DagAccessEntity.XCOM)`` on the ``dag_id`` in the path, so whoever may not
read a DAG's XComs may not read its traces.
"""

from __future__ import annotations

from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, HTTPException, Query, status
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import select

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity
from airflow.api_fastapi.common.db.common import SessionDep
from airflow.api_fastapi.core_api.security import requires_access_dag
from airflow.models.dagrun import DagRun
from airflow.models.taskinstance import TaskInstance
from airflow.models.xcom import XComModel

from airflow_codeagent.operators.codeagent import TRACE_XCOM_KEY
from airflow_codeagent.plugins import render

router = APIRouter()

CanReadXComs = Depends(requires_access_dag("GET", DagAccessEntity.XCOM))
MapIndex = Annotated[int, Query(ge=-1)]

_STATIC = {
    "trace.js": "text/javascript; charset=utf-8",
    "trace.css": "text/css; charset=utf-8",
    "icon.svg": "image/svg+xml",
}


@router.get("/static/{name}", include_in_schema=False)
def static_asset(name: str) -> Response:
    if name not in _STATIC:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "no such asset")
    body = files("airflow_codeagent.plugins").joinpath("static", name).read_bytes()
    return Response(body, media_type=_STATIC[name],
                    headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"})


# -- pages -----------------------------------------------------------------------


def _page_map_index(raw: str | None) -> int:
    """The UI leaves ``{MAP_INDEX}`` unreplaced on a task that is not mapped."""
    try:
        value = int(raw) if raw is not None else -1
    except ValueError:
        return -1
    return value if value >= -1 else -1


@router.get("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/trace", response_class=HTMLResponse)
def trace_page(dag_id: str, run_id: str, task_id: str, map_index: str | None = None) -> HTMLResponse:
    index = _page_map_index(map_index)
    label = task_id if index < 0 else f"{task_id} [{index}]"
    body = render.page_html(view="task", title=f"Agent trace: {label}", heading=label,
                            static_url="../../../../../../static",
                            json_url=f"trace.json?map_index={index}")
    return HTMLResponse(body, headers=render.PAGE_HEADERS)


@router.get("/dags/{dag_id}/runs/{run_id}/agents", response_class=HTMLResponse)
def run_page(dag_id: str, run_id: str) -> HTMLResponse:
    body = render.page_html(view="run", title=f"Agent tasks of {dag_id} / {run_id}",
                            heading=f"{dag_id} / {run_id}", static_url="../../../../static",
                            json_url="agents.json")
    return HTMLResponse(body, headers=render.PAGE_HEADERS)


# -- JSON ------------------------------------------------------------------------


def _not_found(reason: str, message: str) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, {"reason": reason, "message": message})


def _operator(ti: TaskInstance) -> str | None:
    return getattr(ti, "custom_operator_name", None) or getattr(ti, "operator", None)


def _is_agent(ti: TaskInstance) -> bool:
    return render.is_agent_operator(getattr(ti, "operator", None)) or render.is_agent_operator(
        getattr(ti, "custom_operator_name", None))


def _state(ti: TaskInstance) -> str | None:
    return None if ti.state is None else str(getattr(ti.state, "value", ti.state))


def _ti_info(ti: TaskInstance) -> dict[str, Any]:
    return {"state": _state(ti), "try_number": ti.try_number, "operator": _operator(ti),
            "rendered_map_index": getattr(ti, "rendered_map_index", None)}


def _require_run(session: Any, dag_id: str, run_id: str) -> None:
    if session.scalar(select(DagRun.id).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id)) is None:
        raise _not_found("no_run", f"DAG {dag_id} has no run {run_id}.")


@router.get("/dags/{dag_id}/runs/{run_id}/tasks/{task_id}/trace.json", dependencies=[CanReadXComs])
def trace_json(dag_id: str, run_id: str, task_id: str, session: SessionDep,
               map_index: MapIndex = -1) -> JSONResponse:
    ti = session.scalar(select(TaskInstance).where(
        TaskInstance.dag_id == dag_id, TaskInstance.run_id == run_id,
        TaskInstance.task_id == task_id, TaskInstance.map_index == map_index))
    if ti is None:
        _require_run(session, dag_id, run_id)
        where = task_id if map_index < 0 else f"{task_id} (map index {map_index})"
        raise _not_found("no_task_instance", f"Run {run_id} of DAG {dag_id} has no task instance {where}.")
    row = session.scalars(select(XComModel).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.task_id == task_id,
        XComModel.map_index == map_index, XComModel.key == TRACE_XCOM_KEY)).first()
    trace = None if row is None else XComModel.deserialize_value(row)
    if trace is None:
        reason, message = render.no_trace_explanation(task_id=task_id, ti_state=_state(ti),
                                                      operator=_operator(ti), agent=_is_agent(ti))
        raise _not_found(reason, message)
    if not render.is_trace_document(trace):
        raise _not_found("not_a_trace", f"The {TRACE_XCOM_KEY} XCom of task {task_id} is not an agent trace "
                         "this view can read (a custom XCom backend may keep it elsewhere).")
    state = _state(ti)
    steps = trace.get("steps") or []
    body = {
        "dag_id": dag_id, "run_id": run_id, "task_id": task_id, "map_index": map_index,
        "task_instance": _ti_info(ti),
        "liveness": render.liveness(trace, state),
        "notice": render.notice(trace, state),
        "code_lines": [render.highlight_python(s["code"]) if isinstance(s.get("code"), str) else None
                       for s in steps],
        "trace": trace,
    }
    return JSONResponse(body, headers=render.JSON_HEADERS)


@router.get("/dags/{dag_id}/runs/{run_id}/agents.json", dependencies=[CanReadXComs])
def agents_json(dag_id: str, run_id: str, session: SessionDep) -> JSONResponse:
    _require_run(session, dag_id, run_id)
    rows = session.scalars(select(XComModel).where(
        XComModel.dag_id == dag_id, XComModel.run_id == run_id, XComModel.key == TRACE_XCOM_KEY))
    traces = {(r.task_id, r.map_index): XComModel.deserialize_value(r) for r in rows}
    tis = session.scalars(select(TaskInstance).where(TaskInstance.dag_id == dag_id,
                                                     TaskInstance.run_id == run_id))
    agents = []
    for ti in sorted(tis, key=lambda t: (t.task_id, t.map_index)):
        trace = traces.get((ti.task_id, ti.map_index))
        if trace is None and not _is_agent(ti):
            continue
        entry: dict[str, Any] = {"task_id": ti.task_id, "map_index": ti.map_index, **_ti_info(ti),
                                 "has_trace": render.is_trace_document(trace)}
        if entry["has_trace"]:
            entry.update(render.run_summary(trace, entry["state"]))
        agents.append(entry)
    return JSONResponse({"dag_id": dag_id, "run_id": run_id, "agents": agents}, headers=render.JSON_HEADERS)
