"""The ``litellm`` connection type: where the model is and how to authenticate.

One connection holds everything a model call needs, so DAG code names a
connection id and never an API key: ``host`` is the API base URL,
``password`` the API key, and the extra JSON holds ``model`` plus any other
``litellm.completion`` keyword (``temperature``, ``max_tokens``, ...).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from airflow.sdk import BaseHook

from airflow_codeagent.models.completion import LiteLLMModel
from airflow_codeagent.models.retry import RetryPolicy


class LiteLLMHook(BaseHook):
    """Builds a ``LiteLLMModel`` from an Airflow connection."""

    conn_name_attr = "llm_conn_id"
    default_conn_name = "litellm_default"
    conn_type = "litellm"
    hook_name = "LiteLLM"

    def __init__(self, llm_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.llm_conn_id = llm_conn_id

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        return {
            "hidden-fields": ["schema", "login", "port"],
            "relabeling": {"host": "API base URL", "password": "API key"},
            "placeholders": {
                "host": "https://api.openai.com/v1, or http://127.0.0.1:8765/v1 for a local server; "
                        "empty for the provider's default",
                "password": "the provider's API key (masked in logs, never in traces)",
                "extra": '{"model": "openai/gpt-4o-mini", "temperature": 0}',
            },
        }

    def model_settings(self, model: str | None = None) -> tuple[str, dict[str, Any]]:
        """The litellm model string and keyword arguments this connection describes.

        ``model`` overrides the connection's ``extra.model``.
        """
        conn = self.get_connection(self.llm_conn_id)
        extra = dict(conn.extra_dejson)
        chosen = model or extra.pop("model", None)
        extra.pop("model", None)
        if not chosen:
            raise ValueError(
                f"connection {self.llm_conn_id!r} names no model: add {{\"model\": \"openai/gpt-4o-mini\"}} "
                "(any litellm model string) to its extra, or pass model=... to the operator"
            )
        kwargs: dict[str, Any] = extra
        if conn.host:
            parsed = urlparse(conn.host)
            if parsed.scheme not in ("http", "https") or not parsed.netloc:
                raise ValueError(
                    f"connection {self.llm_conn_id!r} has host {conn.host!r}; the host must be the "
                    "API base URL with its scheme, e.g. http://127.0.0.1:8765/v1"
                )
            kwargs["api_base"] = conn.host
        if conn.password:
            kwargs["api_key"] = conn.password
        elif conn.host:
            # A local OpenAI-compatible server needs no key, but the client refuses to send none.
            kwargs.setdefault("api_key", "not-needed")
        return chosen, kwargs

    def get_model(self, model: str | None = None, *, retry: RetryPolicy | None = None) -> LiteLLMModel:
        name, kwargs = self.model_settings(model)
        return LiteLLMModel(name, kwargs, retry=retry)

    def test_connection(self) -> tuple[bool, str]:
        """Make one tiny completion call, as the UI's "Test" button expects."""
        try:
            model = self.get_model(retry=RetryPolicy(max_retries=0))
            completion = model.complete([{"role": "user", "content": "Reply with the word: ok"}],
                                        overrides={"max_tokens": 5})
        except Exception as exc:  # noqa: BLE001 - report any failure to the UI
            return False, str(exc)
        return True, f"model {model.model!r} answered ({completion.output_tokens} tokens)"
