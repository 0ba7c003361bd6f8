"""One-line fixes appended to a NameError, the error models most often repeat unchanged.

Python's own "Did you mean ...?" is added by its traceback printer, which the
sandbox does not use, and it does not know about modules that may be
imported. A model that wrote ``datetime.date(...)`` without an import, or
``store`` where it had ``store_id``, gets the fix named in the observation.
Only names cross into the hint, never values.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence

from airflow_codeagent.sandbox.policy import ImportPolicy


def _importable_from(policy: ImportPolicy, name: str) -> str | None:
    """The authorized module that offers ``name``, for ``from module import name``."""
    for module in policy.authorized:
        if "." in module:
            continue
        try:
            offered = dir(policy.guarded_import(module))
        except Exception:  # noqa: BLE001 - a module that fails to import offers nothing
            continue
        if name in offered:
            return module
    return None


def name_error_hint(name: str, scopes: Sequence[Iterable[str]], policy: ImportPolicy) -> str:
    """The fix for ``NameError: name 'name' is not defined``, or "" if none is clear.

    ``scopes`` are the names the failing code could have used, innermost
    first (the failing frame's locals, the sandbox's variables, its
    builtins); as in Python's own suggestion, a close local name wins.
    """
    if name in policy.authorized:
        return f"Import it first: import {name}"
    module = _importable_from(policy, name)
    if module is not None:
        return f"Import it first: from {module} import {name}"
    for scope in scopes:
        candidates = sorted({n for n in scope if not n.startswith("_") and n != name})
        close = difflib.get_close_matches(name, candidates, n=1, cutoff=0.6)
        if close:
            return f"Did you mean '{close[0]}'?"
    return ""
