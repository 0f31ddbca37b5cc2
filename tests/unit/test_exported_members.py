"""Keep ``__all__`` honest, like httpx's ``tests/test_exported_members.py``.

Every exported name exists, every public name is exported, and every exported class or function
lives in a private module (or in the public module that exports it), so users never import the
same object from two public homes. New exports keep these tests green as long as they follow
that rule; nothing here lists the current API by hand.
"""

from __future__ import annotations

import importlib
import inspect
import types

import pytest

import iampool

# The modules users import from (STYLE.md); everything else is implementation.
PUBLIC_MODULES = (
    "iampool",
    "iampool.superset",
    "iampool.sqlalchemy",
    "iampool.testing",
    # the typed entry points, one per driver
    "iampool.asyncpg",
    "iampool.psycopg",
    "iampool.aiomysql",
    "iampool.asyncmy",
    "iampool.redshift",
)
# Dunder names a package may export on purpose.
EXPORTED_DUNDERS = {"__version__"}


def public_home(module_name: str) -> str | None:
    """The public module that owns ``module_name``: the longest public prefix, if any."""
    homes = [
        public
        for public in PUBLIC_MODULES
        if module_name == public or module_name.startswith(public + ".")
    ]
    return max(homes, key=len, default=None)


@pytest.fixture(params=PUBLIC_MODULES)
def module(request: pytest.FixtureRequest) -> types.ModuleType:
    """Each public module, imported: a missing one fails its tests, it is never skipped."""
    return importlib.import_module(request.param)


def defined_public_names(module: types.ModuleType) -> set[str]:
    """Public attributes of ``module``: not underscored and not submodules."""
    return {
        name
        for name, value in vars(module).items()
        if (not name.startswith("_") or name in EXPORTED_DUNDERS)
        and not isinstance(value, types.ModuleType)
    }


def test_every_name_in_all_exists(module: types.ModuleType) -> None:
    missing = [name for name in module.__all__ if not hasattr(module, name)]

    assert missing == []


def test_all_has_no_duplicates(module: types.ModuleType) -> None:
    assert len(module.__all__) == len(set(module.__all__))


def test_every_public_attribute_of_iampool_is_in_all() -> None:
    assert defined_public_names(iampool) - set(iampool.__all__) == set()


def test_every_class_and_function_defined_in_a_public_module_is_in_its_all(
    module: types.ModuleType,
) -> None:
    # Public modules other than iampool itself may hold imports and constants; what they
    # define with def/class must be exported.
    defined_here = {
        name
        for name in defined_public_names(module)
        if (inspect.isclass(obj := getattr(module, name)) or inspect.isroutine(obj))
        and getattr(obj, "__module__", None) == module.__name__
    }

    assert defined_here - set(module.__all__) == set()


def test_exported_classes_and_functions_live_in_a_private_module_or_their_own(
    module: types.ModuleType,
) -> None:
    misplaced = {}
    for name in module.__all__:
        obj = getattr(module, name)
        if not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue  # constants, type aliases and __version__ carry no __module__ of their own
        home = getattr(obj, "__module__", "")
        if public_home(home) != module.__name__:
            misplaced[name] = home

    assert misplaced == {}


def test_iampool_exports_the_design_contract() -> None:
    # DESIGN.md section 3 names these; more may be added, none may disappear.
    contract = {
        "AwsIamConfig",
        "ConfigError",
        "CredentialError",
        "IamAuthDisabledError",
        "IamPoolError",
        "AuthTokenRejected",
        "CredentialCache",
        "DbAuth",
        "DbCredentials",
        "auth_for",
        "default_cache",
    }

    assert contract - set(iampool.__all__) == set()


def test_superset_exports_iam_config_and_the_feature_flag() -> None:
    import iampool.superset

    assert {"iam_config", "FEATURE_FLAG"} <= set(iampool.superset.__all__)


def test_credential_cache_is_a_thin_facade_over_the_core() -> None:
    # DESIGN.md section 3: the plumbing (leases, AWS source, counters) stays private.
    public = {name for name in dir(iampool.CredentialCache) if not name.startswith("_")}

    assert public == {"stats", "clear", "close", "aclose"}
