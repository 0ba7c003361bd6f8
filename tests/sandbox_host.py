"""What this host really gives an isolated sandbox child, asked of one directly.

Tests that show a run's confinement (trace, trace view) compare against this
instead of a hard-coded kernel: CI and a laptop differ in Landlock and namespaces.
"""

from __future__ import annotations

from airflow_codeagent.sandbox.isolated import IsolatedExecutor


def host_confinement() -> dict[str, str]:
    """The guards a fresh child reports, in the shape ``IsolatedExecutor.confinement`` gives them."""
    host = IsolatedExecutor(authorized_imports=["json"])
    try:
        probe = host._probe("result = 1")
    finally:
        host.close()
    return {guard: probe[guard] for guard in ("process", "network", "filesystem", "syscalls")}
