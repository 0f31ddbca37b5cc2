"""Issue 12, finding 5: whatever the input, an error message stays under 4 KB.

A 100 KB unknown key made a 100 KB message, 10,000 bad ``db_groups`` 80 KB: values echoed in
a message are cut to a short prefix, lists of problems end with "and N more". Huge, numerous and
odd inputs (NUL, newlines, right-to-left marks, emoji, huge integers) are thrown at the
``aws_iam`` parser, the DSN parser with the driver checks behind it, driver keyword arguments
and ``CredentialCache``; every error must be typed and short, and must not break lines.
"""

# ruff: noqa: B023 - an input's builder reads its loop's variables, called while the loop waits

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from iampool import AwsIamConfig, ConfigError, CredentialCache
from iampool._errors import ConfigProblem
from iampool.pools import resolve

LIMIT = 4096
BASE = {"enabled": True, "region": "us-east-1", "db_username": "app"}
REDSHIFT = {**BASE, "cluster_identifier": "analytics", "db_name": "dev"}
ODD = ("x", "\x00", "\n", "\u202e", "\U0001f600", "'", "\\", "%", "\ud800")
# Each character at each size; a million characters of the first two only.
HUGE = [(char, size) for size in (100, 10_000, 100_000) for char in ODD] + [
    (char, 1_000_000) for char in ODD[:2]
]


def big(char: str, size: int) -> str:
    return char * size


def config_inputs() -> Iterator[tuple[str, Callable[[], Any]]]:
    """(category, builder of an input to AwsIamConfig.from_extra); a builder is called while
    the generator waits at its yield, so it sees that iteration's loop variables."""
    for char, size in HUGE:
        yield "huge unknown key", lambda: {**BASE, big(char, size): 1}
        yield "huge string value", lambda: {**BASE, "region": big(char, size)}
        yield "huge string value", lambda: {**BASE, "role_arn": big(char, size)}
        yield "huge string value", lambda: {**REDSHIFT, "cluster_identifier": big(char, size)}
        yield "huge string value", lambda: {**BASE, "workgroup_name": big(char, size)}
        yield "huge string value", lambda: {**BASE, "role_session_name": big(char, size)}
        yield "huge db_groups", lambda: {**REDSHIFT, "db_groups": ["1" + big(char, size)]}
    for count in (10, 1_000, 10_000, 100_000):
        yield "many unknown keys", lambda: {**BASE, **{f"unknown_{n}": n for n in range(count)}}
        yield "many db_groups", lambda: {**REDSHIFT, "db_groups": ["1-not-a-group"] * count}
        yield (
            "many db_groups",
            lambda: {**REDSHIFT, "db_groups": [f"{n}x\x00" for n in range(count)]},
        )
    for number in (10**5000, -(10**400), 2**64, math.inf, math.nan, 1e308, True):
        for field in ("port", "session_duration", "password_duration", "token_duration"):
            yield "odd number", lambda: {**BASE, field: number}
    nested: Any = "x"
    for _ in range(200):
        nested = [nested]
    for field in ("region", "db_groups", "enabled", "port"):
        yield "nested value", lambda: {**BASE, field: nested}
        yield "nested value", lambda: {**BASE, field: {"k" * 10_000: nested}}
    yield (
        "every field wrong",
        lambda: {name: big("\x00", 100_000) for name in AwsIamConfig.__dataclass_fields__},
    )
    yield "json text", lambda: "{" * 100_000
    yield "json text", lambda: '{"aws_iam": ' * 10_000
    yield "json text", lambda: json.dumps({**BASE, "port": 1})[:-1] + "9" * 100_000 + "}"
    yield "json text", lambda: b"\xff\xfe" + b"\x00" * 100_000
    yield "json text", lambda: "[" + ",".join(["1"] * 100_000) + "]"
    yield "json text", lambda: '"' + "x" * 1_000_000 + '"'


DSN_BASES = ("postgresql", "postgresql+psycopg", "mysql", "mysql+asyncmy", "redshift")
# Inputs a driver accepts: an asyncpg DSN's unknown options are server settings, passed on for
# the server to judge. (psycopg: a setting the installed libpq does not know is refused.)
PASSED_ON = "(passed on)"


def dsn_inputs() -> Iterator[tuple[str, Callable[[], tuple[str, Any, dict[str, Any]]]]]:
    """(category, builder of: DSN, aws_iam block, driver keyword arguments) for resolve();
    a category ending in ``PASSED_ON`` is accepted, every other one refused."""
    for scheme in DSN_BASES:
        block = REDSHIFT if scheme == "redshift" else BASE
        settings = f"server setting {PASSED_ON}" if scheme == "postgresql" else None
        for char, size in HUGE:
            yield "huge DSN user", lambda: (f"{scheme}://{big(char, size)}@h/dev", block, {})
            yield (
                settings or "huge DSN option",
                lambda: (f"{scheme}://app@h/dev?{big(char, size)}=1", block, {}),
            )
            yield (
                "huge DSN option",
                lambda: (f"{scheme}://app@h/dev?sslmode={big(char, size)}", block, {}),
            )
            yield (
                "huge DSN option",
                lambda: (f"{scheme}://app@h/dev?sslrootcert={big(char, size)}", block, {}),
            )
            yield "huge scheme", lambda: (f"{big(char, size)}://app@h/dev", block, {})
            yield (
                "huge keyword",
                lambda: (f"{scheme}://app@h/dev", block, {big(char, size): 1, "host": 1}),
            )
            yield (
                "huge keyword",
                lambda: (f"{scheme}://app@h/dev", block, {"ssl": big(char, size)}),
            )
        for count in (10, 1_000, 10_000):
            yield (
                settings or "many DSN options",
                lambda: (
                    f"{scheme}://app@h/dev?" + "&".join(f"option_{n}=1" for n in range(count)),
                    block,
                    {},
                ),
            )
            yield (
                "many DSN users",
                lambda: (f"{scheme}://app@h/dev?" + "&user=x" * count, block, {}),
            )
            yield (
                "many keywords",
                lambda: (
                    f"{scheme}://app@h/dev",
                    block,
                    {**{f"unknown_{n}": n for n in range(count)}, "password": "x"},
                ),
            )
        yield "odd port", lambda: (f"{scheme}://app@h:{'9' * 100_000}/dev", block, {})


def cache_inputs() -> Iterator[tuple[str, Callable[[], dict[str, Any]]]]:
    for name in ("ttl", "refresh_margin", "token_reuse", "deadline", "connect_timeout"):
        for value in (math.nan, -math.inf, 10**5000, "x" * 100_000, [0] * 100_000, True, -1):
            yield "CredentialCache number", lambda: {name: value}
    for name in ("maxsize", "max_attempts"):
        for value in (0, -(10**5000), 1.5, "3" * 100_000, True, math.nan):
            yield "CredentialCache number", lambda: {name: value}
    yield "CredentialCache number", lambda: {"retry_mode": "x" * 1_000_000}


def assert_short(error: ConfigError) -> None:
    text = str(error)
    assert len(text) < LIMIT, text[:200]
    lines = text.split("\n")[1:]
    assert all(line.startswith("  - ") for line in lines), "a problem broke its line"
    assert len(lines) <= len(error.errors) + 1


def nth(inputs: Callable[[], Iterator[tuple[str, Callable[[], Any]]]], index: int) -> Any:
    """The index-th input, built when its test runs (all at once would take gigabytes)."""
    _, build = next(itertools.islice(inputs(), index, None))
    return build()


def indices(inputs: Callable[[], Iterator[tuple[Any, ...]]]) -> list[Any]:
    return [pytest.param(n, id=f"{case[0]}-{n}") for n, case in enumerate(inputs())]


@pytest.mark.parametrize("index", indices(config_inputs))
def test_a_config_error_stays_under_4_kb(index: int) -> None:
    extra = nth(config_inputs, index)
    with pytest.raises(ConfigError) as caught:
        AwsIamConfig.from_extra(extra)

    assert_short(caught.value)


@pytest.mark.parametrize("index", indices(dsn_inputs))
def test_a_dsn_or_keyword_error_stays_under_4_kb(
    index: int, new_cache: Callable[..., CredentialCache]
) -> None:
    category, build = next(itertools.islice(dsn_inputs(), index, None))
    dsn, block, kwargs = build()
    if category.endswith(PASSED_ON):
        resolve(dsn, block, new_cache(), driver_kwargs=kwargs)  # accepted: raises nothing
        return
    with pytest.raises(ConfigError) as caught:
        resolve(dsn, block, new_cache(), driver_kwargs=kwargs)

    assert_short(caught.value)


@pytest.mark.parametrize("index", indices(cache_inputs))
def test_a_credential_cache_error_stays_under_4_kb(index: int) -> None:
    options = nth(cache_inputs, index)
    with pytest.raises(ConfigError) as caught:
        CredentialCache(**options)

    assert_short(caught.value)


def test_10000_bad_db_groups_are_counted_not_listed() -> None:
    with pytest.raises(ConfigError) as caught:
        AwsIamConfig.from_extra({**REDSHIFT, "db_groups": [f"{n}-bad" for n in range(10_000)]})

    assert "'0-bad', '1-bad', '2-bad', '3-bad', '4-bad' and 9995 more)" in str(caught.value)


def test_a_100_kb_unknown_key_is_cut_to_a_prefix() -> None:
    with pytest.raises(ConfigError) as caught:
        AwsIamConfig.from_extra({**BASE, "k" * 100_000: 1})

    assert caught.value.fields == ["k" * 80 + "…"]
    assert len(str(caught.value)) < 600


def test_problems_beyond_the_limit_are_counted_as_and_n_more() -> None:
    error = ConfigError([ConfigProblem(f"field_{n}", "is wrong " * 20) for n in range(10_000)])

    last = str(error).split("\n")[-1]
    assert last.startswith("  - and ")
    assert last.endswith(" more problems")
    listed = len(str(error).split("\n")) - 2
    assert last == f"  - and {10_000 - listed} more problems"
    assert len(error.errors) == 10_000  # all kept for code that reads them


def test_control_characters_in_a_field_name_cannot_forge_lines() -> None:
    with pytest.raises(ConfigError) as caught:
        AwsIamConfig.from_extra({**BASE, "x\n  - region: fine\r\x00": 1})

    assert caught.value.fields == ["x\\n  - region: fine\\r\\x00"]
    assert len(str(caught.value).split("\n")) == 2


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=300),
    lambda children: (
        st.lists(children, max_size=5)
        | st.dictionaries(st.text(max_size=300), children, max_size=5)
    ),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    block=st.dictionaries(
        st.sampled_from(sorted(AwsIamConfig.__dataclass_fields__)) | st.text(max_size=300),
        json_values,
        max_size=12,
    )
)
def test_any_block_parses_or_fails_with_a_short_config_error(block: dict[str, Any]) -> None:
    try:
        AwsIamConfig.from_extra(block)
    except ConfigError as error:
        assert_short(error)


def _measure() -> None:  # pragma: no cover - `python -m tests.unit.test_bounded_errors`
    """Print, per category, the inputs tried, their outcome and the longest message."""
    from collections import defaultdict

    from .fakes import FakeClock, FakeSource

    rows: dict[str, list[int]] = defaultdict(lambda: [0, 0, 0, 0, 0])

    def record(category: str, call: Callable[[], object]) -> None:
        row = rows[category]
        row[0] += 1
        try:
            call()
        except ConfigError as error:
            row[1] += 1
            row[4] = max(row[4], len(str(error)))
        except ValueError as error:
            row[2] += 1
            row[4] = max(row[4], len(str(error)))
        else:
            row[3] += 1

    for category, build in config_inputs():
        record(f"aws_iam: {category}", lambda: AwsIamConfig.from_extra(build()))
    clock = FakeClock()
    source = FakeSource(clock)
    cache = CredentialCache(clock=clock, source=source)
    for category, build in dsn_inputs():
        dsn, block, kwargs = build()
        record(f"DSN: {category}", lambda: resolve(dsn, block, cache, driver_kwargs=kwargs))
    for category, build in cache_inputs():
        record(category, lambda: CredentialCache(**build()))
    cache.close()
    print(f"{'category':34} {'tried':>6} {'Config':>7} {'other':>6} {'valid':>6} {'longest':>8}")
    for category, (tried, typed, other, valid, longest) in rows.items():
        print(f"{category:34} {tried:6} {typed:7} {other:6} {valid:6} {longest:8}")


if __name__ == "__main__":  # pragma: no cover
    _measure()
