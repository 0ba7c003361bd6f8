"""Cooperative interruption of model code running in this process.

The compiler (``instrument.py``) puts a call to ``tick`` at the top of every
loop body, function body, comprehension and ``except`` handler. Once the
step's deadline has passed or the run was cancelled, every tick raises
``StepInterrupted``. Ticking inside ``except`` handlers is what defeats
``while True: try: ... except BaseException: pass``: the handler itself
raises again, so model code cannot swallow the stop.

Host exceptions (Airflow's task timeout, raised by a signal handler into
whatever frame is running) are handled the same way: ``except_tick`` runs
first in every ``except`` handler, and if the exception being handled is a
host exception it cancels the clock and re-raises it, so model code cannot
swallow the worker's own timeout.

A single long C call (``10**10**10``) is not interrupted by this; the
isolated executor with OS limits is the answer to that.
"""

from __future__ import annotations

import sys
import threading
import time


class StepInterrupted(BaseException):
    """Raised into model code when its time is up or the run was cancelled.

    A ``BaseException`` so that ``except Exception`` in model code does not
    catch it; the class is never exposed to model code.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class StepClock:
    """Deadline and cancellation flag shared by the executor and the ticks."""

    __slots__ = ("_cancel_flag", "_cancelled", "_deadline", "_limit_s", "_reason", "fired", "host_exceptions")

    def __init__(self, host_exceptions: tuple[type[BaseException], ...] = ()) -> None:
        self.host_exceptions = host_exceptions
        self.fired = ""  # the reason of the last interrupt this step, "" if none
        self._deadline = float("inf")
        self._limit_s: float | None = None
        self._reason = ""
        self._cancelled = threading.Event()
        self._cancel_flag = False  # what tick reads: an attribute load, cheaper than Event.is_set

    def start(self, limit_s: float | None, reason: str) -> None:
        """Arm the clock for one step; ``limit_s=None`` means no deadline."""
        self._limit_s = limit_s
        self._reason = reason
        self._deadline = float("inf") if limit_s is None else time.monotonic() + limit_s
        self.fired = ""

    def stop(self) -> None:
        # Between steps no model code may run: a generator's ``finally`` or a model ``__del__``-like
        # path reached from the worker's garbage collector would otherwise loop with no deadline.
        self._deadline = float("-inf")
        self._reason = "model code ran outside a step"

    def cancel(self) -> None:
        """Stop running model code at its next tick; safe from any thread."""
        self._cancelled.set()
        self._cancel_flag = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled.is_set()

    def tick(self) -> None:
        if time.monotonic() > self._deadline:
            self.fired = self._reason
            raise StepInterrupted(self._reason)
        if self._cancel_flag:
            self.fired = "run cancelled"
            raise StepInterrupted("run cancelled")

    def except_tick(self) -> None:
        """First statement of every ``except`` handler in model code."""
        handled = sys.exc_info()[1]
        if self.host_exceptions and isinstance(handled, self.host_exceptions):
            self.cancel()
            raise handled
        self.tick()
