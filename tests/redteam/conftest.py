"""Runs every red-team payload against both executors.

A test that uses ``make_executor`` (through the autouse ``sandbox_kind``
fixture) runs twice: against ``RestrictedExecutor`` and ``IsolatedExecutor``,
built with the same constructor keywords. ``@inprocess_only("why")`` and
``@isolated_only("why")`` narrow that to one executor and must say why.
"""

from __future__ import annotations

import pytest

KINDS = ("restricted", "isolated")

inprocess_only = pytest.mark.inprocess_only
isolated_only = pytest.mark.isolated_only


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "inprocess_only(reason): payload only meaningful in-process")
    config.addinivalue_line("markers", "isolated_only(reason): payload only safe/meaningful in the child")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "sandbox_kind" not in metafunc.fixturenames:
        return
    kinds = list(KINDS)
    for name in ("inprocess_only", "isolated_only"):
        marker = metafunc.definition.get_closest_marker(name)
        if marker is None:
            continue
        if not (marker.args and isinstance(marker.args[0], str) and marker.args[0].strip()):
            raise pytest.UsageError(f"{metafunc.definition.nodeid}: @{name} needs a one-line reason")
        kinds = ["restricted"] if name == "inprocess_only" else ["isolated"]
    metafunc.parametrize("sandbox_kind", kinds)
