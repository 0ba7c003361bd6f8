import random

import pytest

from airflow_codeagent.models.retry import RetryPolicy, parse_retry_after


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:10 GMT", now=1445412480.0) == 10.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


def test_backoff_grows_is_jittered_and_bounded():
    policy = RetryPolicy(initial_delay_s=1.0, max_delay_s=4.0)
    rng = random.Random(0)
    delays = [policy.delay_s(attempt, None, rng) for attempt in (1, 2, 3, 4, 5)]
    assert 0.5 <= delays[0] <= 1.0
    assert 1.0 <= delays[1] <= 2.0
    assert all(2.0 <= d <= 4.0 for d in delays[2:])
    assert len({round(d, 6) for d in delays[2:]}) == 3  # jitter: not the same number each time


def test_retry_after_is_used_but_capped():
    policy = RetryPolicy(max_retry_after_s=10.0)
    assert policy.delay_s(1, 2.5, random.Random(0)) == 2.5
    assert policy.delay_s(1, 600.0, random.Random(0)) == 10.0


def test_negative_retries_refused():
    with pytest.raises(ValueError, match="max_retries"):
        RetryPolicy(max_retries=-1)
