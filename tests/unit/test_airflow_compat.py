"""The Airflow names that moved between 3.1 and 3.2, as the operator and tools use them.

These run on every Airflow minor the compat script covers, so each branch is
exercised where it applies.
"""

from __future__ import annotations

from pathlib import Path

import jinja2
import pytest
from airflow.sdk import DAG

from airflow_codeagent.airflow_compat import AirflowTaskTerminated, hook_class_name, native_template_env


def test_native_env_keeps_the_dags_macros_filters_searchpath_and_undefined(tmp_path):
    (tmp_path / "where.sql").write_text("region = '{{ region }}'")
    dag = DAG("compat_env", schedule=None, template_searchpath=[str(tmp_path)],
              user_defined_macros={"regions": lambda: ["emea", "apac"]},
              user_defined_filters={"shout": str.upper})
    env = native_template_env(dag)

    assert env.from_string("{{ regions() }}").render() == ["emea", "apac"]  # a list, not its repr
    assert env.from_string("{{ 'emea' | shout }}").render() == "EMEA"
    assert env.get_template("where.sql").render(region="emea") == "region = 'emea'"
    with pytest.raises(jinja2.UndefinedError):  # Airflow's default: a typo in a template fails the task
        env.from_string("{{ no_such_name }} rows").render()


def test_native_env_keeps_a_dags_own_undefined_policy():
    lenient = DAG("compat_lenient", schedule=None, template_undefined=jinja2.Undefined)
    assert native_template_env(lenient).from_string("{{ no_such_name }} rows").render() == " rows"


def test_native_env_without_a_dag_still_renders_native_values():
    env = native_template_env(None)
    assert env.from_string("{{ [1, 2] + [3] }}").render() == [1, 2, 3]
    with pytest.raises(jinja2.UndefinedError):
        env.from_string("{{ no_such_name }} rows").render()


def test_the_connection_type_resolves_to_its_providers_hook():
    assert hook_class_name("sqlite") == "airflow.providers.sqlite.hooks.sqlite.SqliteHook"
    assert hook_class_name("litellm") == "airflow_codeagent.hooks.litellm.LiteLLMHook"
    assert hook_class_name("no-such-type") is None


def test_task_terminated_is_the_class_the_task_runner_handles_on_sigterm():
    # The operator stops the agent on it, so it must be the very class the runner raises and catches.
    # Where the runner imports it from differs by minor (module level or inside run(); airflow.sdk
    # or airflow.exceptions), so read that from the runner's own source.
    import ast
    import importlib

    from airflow.sdk.execution_time import task_runner

    tree = ast.parse(Path(task_runner.__file__).read_text())
    sources = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
               and any(alias.name == "AirflowTaskTerminated" for alias in node.names)}
    assert sources, "the task runner no longer imports AirflowTaskTerminated"
    for module in sources:
        assert importlib.import_module(module).AirflowTaskTerminated is AirflowTaskTerminated, module
    assert not issubclass(AirflowTaskTerminated, Exception)  # not swallowed by `except Exception`
