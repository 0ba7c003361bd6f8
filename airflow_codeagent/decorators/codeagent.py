"""``@task.codeagent``: the decorated function returns the prompt.

The function's own arguments (upstream XComs, literals) also become sandbox
variables under their parameter names, so a prompt can say "the orders"
and the model finds ``orders`` already defined with its real type.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar

from airflow.sdk.bases.decorator import DecoratedOperator, TaskDecorator, task_decorator_factory
from airflow.sdk.definitions._internal.types import SET_DURING_EXECUTION
from airflow.sdk.definitions.context import context_merge

from airflow_codeagent.operators.codeagent import CodeAgentOperator

if TYPE_CHECKING:
    from airflow.sdk import Context


class _CodeAgentDecoratedOperator(DecoratedOperator, CodeAgentOperator):
    template_fields: Sequence[str] = (*DecoratedOperator.template_fields,
                                      *CodeAgentOperator.template_fields)
    template_fields_renderers: ClassVar[dict[str, str]] = {
        **DecoratedOperator.template_fields_renderers,
        **CodeAgentOperator.template_fields_renderers,
    }
    custom_operator_name = "@task.codeagent"

    def __init__(self, *, python_callable: Callable[..., Any], op_args: Collection[Any] | None = None,
                 op_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(python_callable=python_callable, op_args=op_args, op_kwargs=op_kwargs,
                         prompt=SET_DURING_EXECUTION, **kwargs)

    def execute(self, context: Context) -> Any:
        from airflow.providers.common.compat.sdk import determine_kwargs

        arguments = self._arguments()
        context_merge(context, self.op_kwargs)
        kwargs = determine_kwargs(self.python_callable, self.op_args, context)
        prompt = self.python_callable(*self.op_args, **kwargs)
        if not isinstance(prompt, str) or not prompt.strip():
            raise TypeError(
                f"@task.codeagent function {self.python_callable.__name__!r} must return the prompt "
                f"as a non-empty string, got {type(prompt).__name__}"
            )
        self.prompt = prompt
        clash = sorted(set(arguments) & set(self.inputs or {}))
        if clash:
            raise ValueError(f"{clash} are both function arguments and inputs; rename one of them")
        self.inputs = {**arguments, **(self.inputs or {})}
        return CodeAgentOperator.execute(self, context)

    def _arguments(self) -> dict[str, Any]:
        """The explicitly passed arguments, by parameter name (not the injected context)."""
        signature = inspect.signature(self.python_callable)
        bound = signature.bind_partial(*self.op_args, **self.op_kwargs)
        return dict(bound.arguments)


def codeagent_task(python_callable: Callable[..., Any] | None = None, **kwargs: Any) -> TaskDecorator:
    """Wrap a function that returns a prompt into a ``CodeAgentOperator`` task."""
    return task_decorator_factory(
        python_callable=python_callable,
        decorated_operator_class=_CodeAgentDecoratedOperator,
        **kwargs,
    )
