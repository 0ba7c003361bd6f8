"""When and how long to wait before calling the model again.

Jittered exponential backoff, honouring a server's Retry-After, bounded both
by a number of attempts and by the time the caller has left.
"""

from __future__ import annotations

import email.utils
import random
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RetryPolicy:
    """``max_retries`` extra attempts after the first; delays in seconds.

    Jitter (a uniform draw between half and all of the exponential ceiling)
    spreads the retries of a fan-out of mapped agent tasks that hit the same
    rate limit.
    """

    max_retries: int = 4
    initial_delay_s: float = 1.0
    max_delay_s: float = 30.0
    max_retry_after_s: float = 120.0

    def __post_init__(self) -> None:
        if self.max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {self.max_retries}")
        if self.initial_delay_s < 0 or self.max_delay_s < 0:
            raise ValueError("retry delays must be >= 0")

    def delay_s(self, attempt: int, retry_after_s: float | None, rng: random.Random) -> float:
        """Wait before retry number ``attempt`` (1-based)."""
        if retry_after_s is not None:
            return min(retry_after_s, self.max_retry_after_s)
        ceiling = min(self.max_delay_s, self.initial_delay_s * 2 ** (attempt - 1))
        return rng.uniform(ceiling / 2, ceiling)


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or HTTP-date); None if absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    parsed = email.utils.parsedate_tz(value)
    if parsed is None:
        return None
    return max(0.0, email.utils.mktime_tz(parsed) - (time.time() if now is None else now))
