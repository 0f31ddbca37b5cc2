"""The demo's verdict: what a run proved, in one sentence, or why it did not."""

from __future__ import annotations

import dataclasses

from iampool.demo import DemoSummary

PASSING = DemoSummary(
    postgres="local server 127.0.0.1:5432",
    login_role="iam_demo_0a1b2c",
    login_role_dropped=True,
    identity="iam_demo_0a1b2c",
    workers=64,
    pool_size=10,
    sts_assume_role_calls=1,
    tokens_signed=1,
    connections_opened=10,
    logins_rejected=0,
    queries_requested=5000,
    queries=5000,
    errors=0,
    first_error=None,
    queue_wait_p50_ms=30.0,
    queue_wait_p99_ms=120.0,
    elapsed_s=3.5,
    queries_per_s=1428.6,
)


def test_a_clean_run_says_what_it_proved() -> None:
    assert PASSING.ok
    assert PASSING.problems == []
    assert PASSING.verdict == (
        "Proved: 5,000 queries from 64 workers ran over 10 connections whose every login was "
        "checked as an RDS IAM token, and the whole run cost 1 STS AssumeRole call and "
        "1 RDS auth token."
    )


def test_failed_queries_are_named_with_the_first_error() -> None:
    summary = dataclasses.replace(
        PASSING, queries=4990, errors=10, first_error="ConnectionResetError: peer hung up"
    )

    assert not summary.ok
    assert summary.verdict == (
        "Not proved: 10 of 5000 queries failed (first: ConnectionResetError: peer hung up)."
    )


def test_a_second_assume_role_call_is_a_failure_and_says_so() -> None:
    summary = dataclasses.replace(PASSING, sts_assume_role_calls=2)

    assert not summary.ok
    assert summary.problems == ["2 STS AssumeRole calls instead of 1"]


def test_queries_that_never_ran_are_a_failure() -> None:
    summary = dataclasses.replace(PASSING, queries=4000)

    assert summary.problems == ["only 4000 of 5000 queries ran"]
