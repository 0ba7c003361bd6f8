"""The one interface the agent loop needs from a place that runs model code.

New isolation back-ends (a child process, a container, a remote microVM)
implement this and register a name; the loop does not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from airflow_codeagent.sandbox.observation import Observation


class Executor(Protocol):
    """Runs code actions with state that persists from one ``run`` to the next."""

    @property
    def authorized_imports(self) -> tuple[str, ...]: ...

    def run(self, code: str, *, time_limit_s: float | None = None) -> Observation:
        """Execute one code action; report everything model code does as an Observation."""

    def variables(self) -> dict[str, Any]:
        """What model code has defined so far, for summaries of compacted steps."""

    def confinement(self) -> dict[str, str]:
        """What holds model code beside the policy (process, network, filesystem, system calls), each
        in a few words, so a trace shows how confined its run really was; empty before it is known."""

    def cancel(self) -> None:
        """Stop the running code as soon as possible; callable from any thread."""

    def close(self) -> None:
        """Release processes, files and memory; the executor is not used afterwards."""


class ExecutorFactory(Protocol):
    def __call__(
        self,
        *,
        tools: Mapping[str, Callable[..., Any]],
        variables: Mapping[str, Any],
        authorized_imports: Iterable[str],
        step_timeout_s: float | None,
        output_limit_chars: int,
        reraise: tuple[type[BaseException], ...],
    ) -> Executor: ...


def executor_factory(name: str) -> ExecutorFactory:
    """Look up an executor by the name users pass as ``sandbox=``."""
    from airflow_codeagent.sandbox.isolated import IsolatedExecutor
    from airflow_codeagent.sandbox.restricted import RestrictedExecutor

    factories: dict[str, ExecutorFactory] = {"restricted": RestrictedExecutor, "isolated": IsolatedExecutor}
    try:
        return factories[name]
    except KeyError:
        raise ValueError(f"unknown sandbox {name!r}; choose one of {sorted(factories)}") from None
