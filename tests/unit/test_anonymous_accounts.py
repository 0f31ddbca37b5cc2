"""The testing kit refuses a MySQL/MariaDB server whose anonymous accounts would take the login
user's logins (``''@'localhost'`` beats ``'<user>'@'%'`` for a login from this machine), saying
how to fix it, instead of letting every login become the anonymous user's. The admin SQL runs on
a stub here (the logic); tests/integration/test_gateway_mysql.py runs the probe on the server."""

from __future__ import annotations

import pytest

from iampool.testing import _users
from iampool.testing._front import Upstream

pytestmark = pytest.mark.anyio


class Admin:
    """Records the statements, and answers the anonymous-account probe with ``probe``."""

    def __init__(self, probe: str) -> None:
        self.probe = probe
        self.ran: list[str] = []

    async def __call__(self, upstream: Upstream, statements: list[str]) -> list[str]:
        self.ran += statements
        return [self.probe if sql == _users._MYSQL_ANONYMOUS_PROBE else "" for sql in statements]


def users_on(scheme: str, admin: Admin) -> _users.UpstreamUsers:
    users = _users.UpstreamUsers(Upstream.from_dsn(f"{scheme}://root@127.0.0.1:1/test"))
    users._run = admin
    return users


async def test_anonymous_accounts_are_refused_with_the_fix_before_any_user_is_created() -> None:
    admin = Admin(probe=_users._MYSQL_SEVERAL_ROWS)
    with pytest.raises(ConnectionError) as caught:
        await users_on("mysql", admin).ensure("app_x")

    message = str(caught.value)
    assert "anonymous accounts" in message
    assert "'app_x'@'%'" in message
    assert "DELETE FROM mysql.global_priv WHERE User=''" in message
    assert admin.ran == [_users._MYSQL_ANONYMOUS_PROBE]  # nothing created


@pytest.mark.parametrize("probe", ["", "42000 (1142)"], ids=["none", "admin-may-not-read"])
async def test_without_them_or_unknowable_users_are_created_and_the_probe_runs_once(
    probe: str,
) -> None:
    admin = Admin(probe=probe)
    users = users_on("mysql", admin)

    await users.ensure("app_a")
    await users.ensure("app_b")

    assert admin.ran.count(_users._MYSQL_ANONYMOUS_PROBE) == 1
    assert sum(sql.startswith("CREATE USER") for sql in admin.ran) == 2
    users.let_go()


async def test_postgresql_is_not_probed() -> None:
    admin = Admin(probe=_users._MYSQL_SEVERAL_ROWS)
    users = users_on("postgresql", admin)

    await users.ensure("app_pg")

    assert _users._MYSQL_ANONYMOUS_PROBE not in admin.ran
    users.let_go()
