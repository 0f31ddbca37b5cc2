"""Credentials objects cannot mint more (DESIGN invariant 12), with the real aiobotocore client.

Everything reachable from what iampool hands out or raises is walked, object by object (named
attributes and slots, containers, closures, suspended frames, and ``gc.get_referents`` for
whatever has no name), for the role secrets FakeAws issued during the test: the secret access
keys and session tokens of the assumed role and of the base credentials, raw, URL-encoded and
JSON-escaped. What a token itself carries is allowed: an RDS or DSQL token's text holds its
session token, URL-encoded, in ``X-Amz-Security-Token``.

- ``DbCredentials`` (RDS token, Redshift password): no role secret reachable, nothing excepted;
  pickled, no role secret in the bytes, and it unpickles equal.
- authenticators and caches: the role's credentials are where a cache must keep them to sign
  (the STS entry's ``AwsCredentials``) and in the AWS clients of its service loop; the walk
  stops there and finds them nowhere else. Pickling either is refused with a ``TypeError``.
- errors (an AccessDenied, a refused login): no role secret reachable, but for the cache a
  frame of their traceback may hold as ``self`` (walked as a cache); pickled, none either.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import pickle
import types
from collections import Counter, deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import pytest

import iampool
from iampool import AuthTokenRejected, CredentialCache, CredentialError, auth_for
from iampool._aws import AioAwsSource, AwsCredentials
from iampool._cache import mint_context
from iampool._leases import Leases
from iampool._minting import MintContext
from iampool._redact import _forms as forms
from iampool.testing import FakeAws, IamDatabase

pytestmark = pytest.mark.anyio

LIMIT = 500_000  # objects one walk may visit; a walk that hits it fails the test


@dataclass
class Walk:
    """One walk: where a needle was found, and what was visited."""

    found: list[str] = field(default_factory=list)
    kinds: Counter[str] = field(default_factory=Counter)

    @property
    def visited(self) -> int:
        return sum(self.kinds.values())


def walk(
    root: object, needles: list[str], stop: Callable[[object], bool] = lambda _: False
) -> Walk:
    """Every object reachable from ``root`` (not descending into those ``stop`` accepts),
    searched for ``needles``; breadth first, each object once."""
    result = Walk()
    seen = {id(root)}
    queue: deque[tuple[object, str]] = deque([(root, type(root).__name__)])
    while queue:
        value, path = queue.popleft()
        result.kinds[type(value).__name__] += 1
        assert result.visited < LIMIT, f"the walk from {type(root).__name__} did not end"
        if isinstance(value, (str, bytes, bytearray)):
            text = value if isinstance(value, str) else bytes(value).decode("latin-1")
            result.found += [path for needle in needles if needle in text][:1]
            continue
        if stop(value):
            continue
        for name, child in children(value):
            if id(child) not in seen and not isinstance(child, (int, float, bool, type(None))):
                seen.add(id(child))
                queue.append((child, f"{path}{name}"))
    return result


def children(value: Any) -> Iterator[tuple[str, Any]]:
    """What ``value`` refers to, named where a name exists. Modules, classes, code and the
    globals of functions and frames are the program, not data: not followed."""
    if isinstance(value, (types.ModuleType, type, types.CodeType, types.BuiltinFunctionType)):
        return
    if isinstance(value, dict):
        for key, item in list(value.items()):
            yield f"[{key!r:.40}]", item
            yield " (key)", key
        return
    if isinstance(value, (list, tuple, set, frozenset, deque)):
        yield from ((f"[{index}]", item) for index, item in enumerate(list(value)))
        return
    if isinstance(value, types.FunctionType):
        for cell in value.__closure__ or ():
            try:
                yield " closure", cell.cell_contents
            except ValueError:  # an empty cell
                continue
        yield " defaults", value.__defaults__
        yield " kwdefaults", value.__kwdefaults__
        return
    if isinstance(value, types.FrameType):
        yield " locals", dict(value.f_locals)
        return
    if isinstance(value, (types.CoroutineType, types.GeneratorType)):
        frame = getattr(value, "cr_frame", None) or getattr(value, "gi_frame", None)
        if frame is not None:
            yield " frame", frame
        return
    named: set[int] = set()
    attributes: dict[str, Any] = {}
    with contextlib.suppress(Exception):  # no __dict__, or a proxy that raises (werkzeug's)
        attributes.update(vars(value))
    for klass in type(value).__mro__:
        for slot in getattr(klass, "__slots__", ()):
            if isinstance(slot, str) and slot not in attributes:
                try:
                    attributes[slot] = object.__getattribute__(value, slot)
                except AttributeError:
                    continue
    for name, item in attributes.items():
        named.add(id(item))
        yield f".{name}", item
    for index, item in enumerate(gc.get_referents(value)):
        if id(item) not in named and not isinstance(item, dict | type):  # __dict__, the class
            yield f" <ref {index}>", item


@dataclass
class RoleSecrets:
    secret_keys: list[str]
    session_tokens: list[str]

    def needles(self, *, session_tokens: bool = True) -> list[str]:
        secrets = self.secret_keys + (self.session_tokens if session_tokens else [])
        return [form for secret in secrets for form in forms(secret) if len(form) >= 16]


async def role_secrets(
    aws: FakeAws, cache: CredentialCache, config: iampool.AwsIamConfig
) -> RoleSecrets:
    """The secrets of the base key and of the role credentials ``cache`` holds for ``config``."""
    assumed = await mint_context(cache).aws_credentials(config)
    keys = [aws.base_key, aws.signing_key(assumed.access_key_id)]
    assert keys[1] is not None
    return RoleSecrets(
        secret_keys=[key.secret_access_key for key in keys if key is not None],
        session_tokens=[key.session_token for key in keys if key is not None and key.session_token],
    )


def in_a_cache(value: object) -> bool:
    """Where a cache keeps credentials by design: its STS entries, and the AWS clients."""
    return isinstance(value, (AwsCredentials, AioAwsSource))


def this_tests_frame(value: object) -> bool:
    """The test's own frame (a traceback ends there): its locals are the test's, not iampool's."""
    return isinstance(value, types.FrameType) and value.f_code.co_filename == __file__


def outside_the_error(value: object) -> bool:
    """Where a walk from an error stops: the test's frame, and the cache a frame's ``self``
    reaches (walked on its own above)."""
    return this_tests_frame(value) or isinstance(
        value, (CredentialCache, MintContext, Leases, AioAwsSource, AwsCredentials)
    )


@pytest.fixture
def cache() -> Iterator[CredentialCache]:
    cache = CredentialCache()
    yield cache
    cache.close()


async def test_an_rds_token_reaches_no_role_secret_and_pickles_without_one(
    fake_aws: FakeAws, iam_postgres: IamDatabase, cache: CredentialCache
) -> None:
    host, port = iam_postgres.gateway.signed_endpoint
    auth = auth_for(iam_postgres.config, host=host, port=port, cache=cache)
    credentials = await auth.credentials()
    secrets = await role_secrets(fake_aws, cache, iam_postgres.config)
    # A token carries its session token, URL-encoded: that is the token, not a way to mint.
    assert quote(secrets.session_tokens[-1], safe="-_.~") in credentials.password

    reached = walk(credentials, secrets.needles(session_tokens=False))
    assert reached.found == []
    assert reached.kinds["Presigned"] == 1  # the walk went into the compact token
    assert reached.kinds["AwsCredentials"] == 0

    data = pickle.dumps(credentials)
    assert not any(needle.encode() in data for needle in secrets.needles(session_tokens=False))
    restored = pickle.loads(data)  # noqa: S301 (our own bytes)
    assert restored == credentials
    assert restored.password == credentials.password

    # The token still logs in after the round trip (a pickled DbCredentials is usable).
    connection = await iampool.connect(iam_postgres.dsn, aws_iam=iam_postgres.config, cache=cache)
    await connection.close()


async def test_a_redshift_password_reaches_no_role_secret_and_pickles_without_one(
    fake_aws: FakeAws, iam_redshift: IamDatabase, cache: CredentialCache
) -> None:
    auth = auth_for(iam_redshift.config, cache=cache)
    credentials = await auth.credentials()
    secrets = await role_secrets(fake_aws, cache, iam_redshift.config)

    assert walk(credentials, secrets.needles()).found == []
    data = pickle.dumps(credentials)
    assert not any(needle.encode() in data for needle in secrets.needles())
    assert pickle.loads(data) == credentials  # noqa: S301 (our own bytes)


async def test_authenticators_and_caches_keep_role_secrets_only_where_they_sign_from(
    fake_aws: FakeAws, iam_postgres: IamDatabase, iam_redshift: IamDatabase, cache: CredentialCache
) -> None:
    host, port = iam_postgres.gateway.signed_endpoint
    rds = auth_for(iam_postgres.config, host=host, port=port, cache=cache)
    redshift = auth_for(iam_redshift.config, cache=cache)
    await rds.credentials()
    await redshift.credentials()
    secrets = await role_secrets(fake_aws, cache, iam_postgres.config)
    other = await role_secrets(fake_aws, cache, iam_redshift.config)
    needles = secrets.needles(session_tokens=False) + other.needles(session_tokens=False)

    for root in (rds, redshift, cache):
        reached = walk(root, needles, stop=in_a_cache)
        assert reached.found == [], type(root).__name__
        assert reached.kinds["DbCredentials"] >= 1  # the cached tokens and passwords were walked
        assert reached.kinds["AwsCredentials"] >= 1  # and the STS entries reached (not entered)
        with pytest.raises(TypeError, match="cannot be pickled: it holds AWS credentials"):
            pickle.dumps(root)

    # Where they are: the STS entry, as a cache must keep them to sign tokens.
    held = walk(cache, needles, stop=lambda value: isinstance(value, AioAwsSource))
    assert held.found
    assert all(path.endswith(".secret_access_key") for path in held.found), held.found


async def test_errors_reach_no_role_secret_and_pickle_without_one(
    fake_aws: FakeAws, iam_postgres: IamDatabase, cache: CredentialCache
) -> None:
    await mint_context(cache).aws_credentials(iam_postgres.config)  # role secrets issued
    secrets = await role_secrets(fake_aws, cache, iam_postgres.config)
    errors: list[BaseException] = []

    denied_role = fake_aws.create_role("iampool-no-secret-denied", external_id="right-id")
    denied = iampool.AwsIamConfig.from_extra(
        {**iam_postgres.config.to_dict(), "role_arn": denied_role, "external_id": "wrong-id"}
    )
    with pytest.raises(CredentialError) as caught:
        await mint_context(cache).aws_credentials(denied)
    errors.append(caught.value)

    iam_postgres.gateway.reject_next(2)  # the first login and its retry with fresh credentials
    with pytest.raises(AuthTokenRejected) as rejected:
        await iampool.connect(iam_postgres.dsn, aws_iam=iam_postgres.config, cache=cache)
    errors.append(rejected.value)
    # asyncpg closes a refused attempt's TLS transport, whose socket goes when the loop sees the
    # gateway hang up: let it before this test's loop stops (else, 1 run in 8, "unclosed
    # transport" at teardown).
    await asyncio.to_thread(iam_postgres.gateway.wait_idle)
    await asyncio.sleep(0.05)

    for error in errors:
        reached = walk(error, secrets.needles(), stop=outside_the_error)
        assert reached.found == [], type(error).__name__
        assert reached.kinds["frame"] >= 1  # its traceback's frames were walked
        data = pickle.dumps(error)
        assert not any(needle.encode() in data for needle in secrets.needles())
    # AuthTokenRejected does not unpickle (keyword-only arguments): not checked here.
    assert str(pickle.loads(pickle.dumps(errors[0]))) == str(errors[0])  # noqa: S301


async def test_walk_finds_a_secret_planted_anywhere_it_looks() -> None:
    # The walker itself: a secret in a slot, a closure, a suspended coroutine, a dict key.
    secret = "PLANTEDSECRETwJalrXUtnFEMIK7MDENG"

    class Slotted:
        __slots__ = ("held",)

        def __init__(self, held: object) -> None:
            self.held = held

    def closure() -> Callable[[], str]:
        kept = secret
        return lambda: kept

    async def suspended(kept: str) -> None:
        await asyncio.sleep(3600)

    coroutine = suspended(secret)
    try:
        for root in (Slotted(secret), closure(), {secret: 1}, Slotted([coroutine])):
            assert walk(root, forms(secret)).found, type(root).__name__
    finally:
        coroutine.close()
