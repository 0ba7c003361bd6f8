"""Airflow names that moved between 3.1 and 3.2, resolved once.

Names that ``airflow.providers.common.compat.sdk`` already maps are imported
from there where they are used; this module holds only the ones it does not,
so that supporting another Airflow minor means reading one file.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import jinja2

try:  # Airflow 3.2+
    from airflow.sdk.exceptions import AirflowTaskTerminated
except ImportError:  # Airflow 3.1
    from airflow.exceptions import AirflowTaskTerminated  # type: ignore[no-redef,attr-defined]

__all__ = ["AirflowTaskTerminated", "hook_class_name", "native_template_env"]


def hook_class_name(conn_type: str) -> str | None:
    """The dotted hook class an installed provider registers for ``conn_type``, if any."""
    hooks: Any
    try:  # Airflow 3.2+: the task runtime's own registry, no core import in the worker
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime
    except ImportError:  # Airflow 3.1
        from airflow.providers_manager import ProvidersManager

        hooks = ProvidersManager().hooks
    else:
        hooks = ProvidersManagerTaskRuntime().hooks
    info = hooks.get(conn_type)
    return None if info is None else info.hook_class_name


def native_template_env(dag: Any | None) -> jinja2.Environment:
    """A Jinja environment that renders native objects, with the DAG's loader, macros and filters.

    Built here rather than by Airflow (3.2's ``create_template_env``, 3.1's
    ``DAG.get_template_env``, which is native only when the whole DAG is) because
    the operator needs native rendering for its ``inputs`` whatever the DAG says.
    """
    import jinja2
    from airflow.sdk.definitions._internal.templater import NativeEnvironment

    options: dict[str, Any] = {"extensions": ["jinja2.ext.do"], "cache_size": 0,
                               "undefined": jinja2.StrictUndefined}
    if dag is None:
        return NativeEnvironment(**options)
    searchpath = [dag.folder, *(dag.template_searchpath or [])] if dag.folder else None
    if searchpath:
        options["loader"] = jinja2.FileSystemLoader(searchpath)
    options["undefined"] = dag.template_undefined
    options.update(dag.jinja_environment_kwargs or {})
    env = NativeEnvironment(**options)
    env.globals.update(dag.user_defined_macros or {})
    env.filters.update(dag.user_defined_filters or {})
    return env
