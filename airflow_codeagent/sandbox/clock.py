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

Ticks run in every loop iteration, so they must be nearly free while the
step still has time. The clock therefore binds the tick name in the model's
namespace to a C no-op (``int``: ``int()`` is 0, which keeps
``_tick_() or body`` and ``not _tick_()`` meaning what they did) while the
step runs, and swaps in the raising ``tick`` the moment it must stop: a
watchdog thread at the deadline, ``cancel()`` from any thread or a signal
handler, and ``stop()`` between steps. Model code reads the name on every
call (it cannot bind names starting with "_" itself), so the swap takes
effect at its next tick.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref


class StepInterrupted(BaseException):
    """Raised into model code when its time is up or the run was cancelled.

    A ``BaseException`` so that ``except Exception`` in model code does not
    catch it; the class is never exposed to model code.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


_RUNNING_TICK = int  # a C callable taking no arguments and returning a false value


class _Watchdog:
    """One daemon thread for every clock of the process: swaps in the raising tick at deadlines."""

    def __init__(self) -> None:
        self._wake = threading.Condition(threading.Lock())
        self._armed: dict[int, tuple[float, int, weakref.ref[StepClock]]] = {}
        self._thread: threading.Thread | None = None

    def arm(self, clock: StepClock, deadline: float, generation: int) -> None:
        with self._wake:
            self._armed[id(clock)] = (deadline, generation, weakref.ref(clock))
            if self._thread is None or not self._thread.is_alive():  # also after a fork
                self._thread = threading.Thread(target=self._run, name="codeagent-step-clock", daemon=True)
                self._thread.start()
            self._wake.notify()

    def disarm(self, clock: StepClock) -> None:
        with self._wake:
            self._armed.pop(id(clock), None)

    def _run(self) -> None:
        with self._wake:
            while True:
                try:
                    now = time.monotonic()
                    for key, (deadline, generation, ref) in list(self._armed.items()):
                        if deadline <= now:
                            del self._armed[key]
                            clock = ref()
                            if clock is not None:
                                clock._expire(generation)
                    nearest = min((deadline for deadline, _, _ in self._armed.values()), default=None)
                    # capped: Condition.wait overflows on a huge timeout (step_timeout_s=1e12)
                    self._wake.wait(None if nearest is None else min(max(0.0, nearest - now), 3600.0))
                except Exception:  # noqa: BLE001 - this thread must outlive any one bad entry
                    self._armed.clear()

    def reset_after_fork(self) -> None:
        """A forked child has no watchdog thread and maybe a lock held by the parent's."""
        self._wake = threading.Condition(threading.Lock())
        self._armed = {}
        self._thread = None


_WATCHDOG = _Watchdog()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_WATCHDOG.reset_after_fork)


class StepClock:
    """Deadline and cancellation flag shared by the executor and the ticks."""

    __slots__ = ("__weakref__", "_bindings", "_cancel_flag", "_cancelled", "_deadline", "_generation",
                 "_limit_s", "_reason", "_tick_name", "fired", "host_exceptions")

    def __init__(self, host_exceptions: tuple[type[BaseException], ...] = ()) -> None:
        self.host_exceptions = host_exceptions
        self.fired = ""  # the reason of the last interrupt this step, "" if none
        self._deadline = float("inf")
        self._limit_s: float | None = None
        self._reason = ""
        self._cancelled = threading.Event()
        self._cancel_flag = False  # what tick reads: an attribute load, cheaper than Event.is_set
        self._bindings: dict[str, object] | None = None
        self._tick_name = ""
        self._generation = 0

    def bind(self, namespace: dict[str, object], tick_name: str) -> None:
        """Let the clock set ``namespace[tick_name]``: a no-op while the step runs, ``tick`` to stop it."""
        self._bindings = namespace
        self._tick_name = tick_name
        self._set_tick(stopping=self._deadline == float("-inf") or self._cancel_flag)

    def _set_tick(self, *, stopping: bool) -> None:
        if self._bindings is not None:
            self._bindings[self._tick_name] = self.tick if stopping else _RUNNING_TICK

    def _expire(self, generation: int) -> None:
        if generation == self._generation:  # the step it was armed for is still running
            self._set_tick(stopping=True)

    def start(self, limit_s: float | None, reason: str) -> None:
        """Arm the clock for one step; ``limit_s=None`` means no deadline."""
        self._limit_s = limit_s
        self._reason = reason
        self._deadline = float("inf") if limit_s is None else time.monotonic() + limit_s
        self.fired = ""
        self._generation += 1
        self._set_tick(stopping=False)
        if self._cancel_flag:  # checked after the write: a cancel() in between must not be overwritten
            self._set_tick(stopping=True)
        if limit_s is not None:
            _WATCHDOG.arm(self, self._deadline, self._generation)

    def stop(self) -> None:
        # Between steps no model code may run: a generator's ``finally`` or a model ``__del__``-like
        # path reached from the worker's garbage collector would otherwise loop with no deadline.
        self._deadline = float("-inf")
        self._reason = "model code ran outside a step"
        self._generation += 1
        self._set_tick(stopping=True)
        _WATCHDOG.disarm(self)

    def cancel(self) -> None:
        """Stop running model code at its next tick; safe from any thread and from a signal handler."""
        self._cancelled.set()
        self._cancel_flag = True
        self._set_tick(stopping=True)
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
