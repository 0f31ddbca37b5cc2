"""The login user the suite's databases see: one of this run's own.

Every gateway the tests start logs in as ``APP``, never a fixed ``app``, and so do the plugin's
``iam_*`` fixtures: ``tests/conftest.py`` sets it, in ``pytest_configure`` (before any test
module imports it), to the run's login user (``iampool.testing.plugin.login_user_of``:
``--iampool-login-user``, ``IAMPOOL_TEST_LOGIN_USER``, the ini setting, else
``iampool_<pid>_<hex>``). Two runs on one server (pytest-xdist workers, two CI jobs, a developer
and CI) then each drop only their own user at their end, never the one the other still logs in
as. A process outside pytest (``clock_worker.py``) gets a name of its own at import.
"""

from __future__ import annotations

import os

from iampool.testing._launch import LOGIN_USER_VARIABLE, login_user

APP = login_user(os.environ.get(LOGIN_USER_VARIABLE), LOGIN_USER_VARIABLE)
IAM_APP = f"IAM:{APP}"  # the Redshift database user GetClusterCredentials names for APP
OTHER = f"{APP}_other"  # a second user, for tests of a login as the wrong user


def use(name: str) -> None:
    """Make ``name`` the run's login user (before the test modules import it)."""
    global APP, IAM_APP, OTHER
    APP, IAM_APP, OTHER = name, f"IAM:{name}", f"{name}_other"
