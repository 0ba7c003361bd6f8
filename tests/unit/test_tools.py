import pytest

from airflow_codeagent import Tool, tool
from airflow_codeagent.tools.base import ToolDefinitionError


def test_signature_text_shows_types_defaults_and_documented_arguments():
    @tool
    def lookup(customer_id: int, fields: list[str] | None = None) -> dict:
        """Fetch one customer record.

        Args:
            customer_id: numeric id from the orders table.
            fields: which columns to return; all when omitted. Long descriptions
                may wrap onto a second line.

        Returns:
            The record as a dict.
        """
        return {}

    text = lookup.signature_text()
    assert text.startswith("def lookup(customer_id: int, fields: list[str] | None = None) -> dict:")
    assert "Fetch one customer record." in text
    assert "customer_id: numeric id from the orders table." in text
    assert "fields: which columns to return; all when omitted. Long descriptions may wrap onto a second line." in text
    assert "Returns: The record as a dict." in text


def test_tool_without_docstring_is_refused_with_a_fix():
    def undocumented(x: int) -> int:
        return x

    with pytest.raises(ToolDefinitionError, match="has no docstring"):
        tool(undocumented)


def test_tool_name_override_and_call_through():
    @tool(name="add_one")
    def _impl(x: int) -> int:
        """Add one."""
        return x + 1

    assert isinstance(_impl, Tool)
    assert _impl.name == "add_one" and _impl(1) == 2


def test_private_name_is_refused():
    def _hidden(x):
        """Hidden."""

    with pytest.raises(ToolDefinitionError, match="not a usable Python name"):
        tool(_hidden)


def test_toolkits_are_flattened_with_tools_and_functions():
    from airflow_codeagent.tools.base import expand_tools

    @tool
    def one() -> int:
        """One."""
        return 1

    def two() -> int:
        """Two."""
        return 2

    class Kit:
        def tools(self):
            return [Tool(lambda: 3, name="three", description="Three.")]

    assert [t.name for t in expand_tools([one, Kit(), two])] == ["one", "three", "two"]
