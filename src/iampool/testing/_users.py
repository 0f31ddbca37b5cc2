"""The login users gateways create on their upstream server, and drop again.

Every statement runs as the upstream DSN's admin user, on a connection of its own. The users
created in this process are remembered, with the gateways that rely on each, so that a test
session removes exactly those at its end: a user that existed before is left alone (another
session may be using it), and a user two gateways rely on is dropped by the last one done.
"""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable

from . import mysql, pg
from ._front import Upstream

__all__ = ["UpstreamUsers"]

AdminRunner = Callable[[Upstream, list[str]], Awaitable[list[str]]]

_PG_EXISTS = {"", "42710", "23505"}  # created, duplicate_object, a concurrent CREATE won the race
_PG_MISSING = "42704"  # undefined_object
_MYSQL_EXISTS = "HY000 (1396)"  # ER_CANNOT_USER: CREATE USER of an existing account
# An anonymous account for a named host (''@'localhost', as mariadb-install-db makes them) wins
# over '<user>'@'%' for a login from this machine: the gateway's upstream logins would be the
# anonymous user's. The probe fails with 1242 (a subquery of several rows) exactly when one
# exists, and returns no rows either way (the admin runner takes none).
_MYSQL_ANONYMOUS_PROBE = (
    "SET @iampool_anonymous = "
    "(SELECT 1 FROM mysql.user WHERE user = '' AND host <> '%' UNION ALL SELECT 1)"
)
_MYSQL_SEVERAL_ROWS = "21000 (1242)"
_ANONYMOUS_FIX = (
    "Drop them as mysql_secure_installation does (MariaDB: DELETE FROM mysql.global_priv "
    "WHERE User=''; FLUSH PRIVILEGES) or point the kit at another server"
)


_Key = tuple[str, str, int, str]  # scheme, host, port, user name


class _Registry:
    """Process-wide: users created here, and the gateways relying on each user."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.created: set[_Key] = set()
        self.holders: dict[_Key, set[UpstreamUsers]] = {}


_REGISTRY = _Registry()


class UpstreamUsers:
    """Creates, checks and drops login users on one upstream server.

    The coroutines run on the gateway's event loop; ``created`` may be read from any thread.
    """

    def __init__(self, upstream: Upstream) -> None:
        self._upstream = upstream
        self._run: AdminRunner = (
            pg.run_admin_statements
            if upstream.scheme == "postgresql"
            else mysql.run_admin_statements
        )
        self._known: set[str] = set()  # users seen to exist, so a login checks only once
        self._vetted = upstream.scheme == "postgresql"  # MySQL: no anonymous account in the way
        self._relied: set[str] = set()  # users this gateway used, held again after a restart

    @property
    def created(self) -> tuple[str, ...]:
        """Users created in this process (by any gateway) that this gateway relies on, sorted."""
        with _REGISTRY.lock:
            return tuple(
                sorted(
                    key[3] for key in _REGISTRY.created if self in _REGISTRY.holders.get(key, ())
                )
            )

    async def ensure(self, name: str, *, keep: bool = False) -> bool:
        """Create user ``name`` unless it exists; grant it the upstream database's use.
        With ``keep``, a user created now is not counted as created here: it is never dropped.

        Returns:
            ``True`` when this call created the user.

        Raises:
            ValueError: a name the upstream cannot take safely.
            ConnectionError: the admin login or a statement failed.
        """
        statements = self._create_statements(name)
        if not self._vetted:
            await self._refuse_anonymous_accounts(name)
        states = await self._run(self._upstream, statements)
        created = states[0] == ""
        failed = [
            state
            for index, state in enumerate(states)
            if state and not (index == 0 and self._already_exists(state))
        ]
        if failed:
            raise ConnectionError(
                f"creating user {name!r} on {self._upstream.endpoint} failed (SQLSTATE "
                f"{', '.join(failed)})"
            )
        self._hold(name, created=created and not keep)
        return created

    async def _refuse_anonymous_accounts(self, name: str) -> None:
        """Raise ``ConnectionError`` if an anonymous account would take ``name``'s logins
        (a server whose admin may not read ``mysql.user`` is taken as it is)."""
        [state] = await self._run(self._upstream, [_MYSQL_ANONYMOUS_PROBE])
        if state == _MYSQL_SEVERAL_ROWS:
            where = self._upstream.endpoint
            raise ConnectionError(
                f"{where} has anonymous accounts (''@'localhost' and the like, as "
                f"mariadb-install-db creates): for a login from this machine they win over "
                f"'{name}'@'%', so the gateway's logins would be anonymous. {_ANONYMOUS_FIX}"
            )
        self._vetted = True

    async def exists(self, name: str) -> bool:
        """Whether PostgreSQL user ``name`` exists (answered from memory once seen)."""
        with _REGISTRY.lock:
            if name in self._known:
                return True
        [state] = await self._run(
            self._upstream, [f"SELECT {_pg_literal(_pg_identifier(name))}::regrole"]
        )
        if state not in ("", _PG_MISSING):
            raise ConnectionError(
                f"looking up user {name!r} on {self._upstream.endpoint} failed (SQLSTATE {state})"
            )
        if state == "":
            self._hold(name, created=False)
        return state == ""

    def let_go(self) -> None:
        """Stop relying on the users this gateway used (it stopped); nothing is dropped."""
        with _REGISTRY.lock:
            self._known.clear()
            for holders in _REGISTRY.holders.values():
                holders.discard(self)

    def hold_again(self) -> None:
        """Rely again on the users this gateway used before it stopped (it started again)."""
        with _REGISTRY.lock:
            for name in self._relied:
                _REGISTRY.holders.setdefault((*self._where, name), set()).add(self)

    async def release(self) -> None:
        """Stop relying on the users this gateway used, and drop every user created in this
        process on this server that no running gateway relies on.

        Raises:
            ConnectionError: a user could not be dropped (the others still are).
        """
        self.let_go()
        with _REGISTRY.lock:
            self._relied.clear()
            orphans = sorted(
                key[3]
                for key in _REGISTRY.created
                if key[:3] == self._where and not _REGISTRY.holders.get(key)
            )
        failures: list[str] = []
        for name in orphans:
            try:
                await self.drop(name)
            except ConnectionError as exc:
                failures.append(str(exc))
        if failures:
            raise ConnectionError("; ".join(failures))

    async def drop(self, name: str) -> None:
        """Drop user ``name`` and what it owns in the upstream database; no error if absent.

        Raises:
            ConnectionError: a statement failed.
        """
        if self._upstream.scheme == "postgresql":
            role = _pg_identifier(name)
            statements = [f"DROP OWNED BY {role}", f"DROP ROLE IF EXISTS {role}"]
        else:
            statements = [f"DROP USER IF EXISTS {_mysql_account(name)}"]
        states = await self._run(self._upstream, statements)
        failed = [state for state in states if state not in ("", _PG_MISSING)]
        key = (*self._where, name)
        with _REGISTRY.lock:
            for holder in _REGISTRY.holders.pop(key, set()):
                holder._known.discard(name)
                holder._relied.discard(name)
            if not failed:
                _REGISTRY.created.discard(key)
        if failed:
            raise ConnectionError(
                f"dropping user {name!r} on {self._upstream.endpoint} failed (SQLSTATE "
                f"{', '.join(failed)})"
            )

    @property
    def _where(self) -> tuple[str, str, int]:
        return (self._upstream.scheme, self._upstream.host, self._upstream.port)

    def _hold(self, name: str, *, created: bool) -> None:
        key = (*self._where, name)
        with _REGISTRY.lock:
            self._known.add(name)
            self._relied.add(name)
            _REGISTRY.holders.setdefault(key, set()).add(self)
            if created:
                _REGISTRY.created.add(key)

    def _already_exists(self, state: str) -> bool:
        if self._upstream.scheme == "postgresql":
            return state in _PG_EXISTS
        return state == _MYSQL_EXISTS

    def _create_statements(self, name: str) -> list[str]:
        """SQL creating ``name`` (first statement) and granting it the database's use."""
        if not name or "\0" in name:
            raise ValueError("a user name must be non-empty and contain no NUL")
        password = self._upstream.password
        if self._upstream.scheme == "postgresql":
            role = _pg_identifier(name)
            create = f"CREATE ROLE {role} LOGIN"
            if password is not None:
                create += f" PASSWORD {_pg_literal(password)}"
            return [create, f"GRANT USAGE, CREATE ON SCHEMA public TO {role}"]
        account = _mysql_account(name)
        create = f"CREATE USER {account}"
        if password is not None:
            escaped = password.replace("\\", "\\\\").replace("'", "\\'")
            create += f" IDENTIFIED BY '{escaped}'"
        statements = [create]
        if self._upstream.database:
            database = "`" + self._upstream.database.replace("`", "``") + "`"
            statements.append(f"GRANT ALL PRIVILEGES ON {database}.* TO {account}")
        return statements


def _pg_identifier(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _pg_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _mysql_account(name: str) -> str:
    if not name or "\0" in name:
        raise ValueError("a user name must be non-empty and contain no NUL")
    if any(char in name for char in "'\\`") or len(name) > 80:
        raise ValueError("MySQL user names here must be <= 80 characters without ' \\ or `")
    return f"'{name}'@'%'"
