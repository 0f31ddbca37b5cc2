"""The login user the suite's databases see: one of this process's own.

Every gateway the tests start, and the plugin's ``iam_*`` fixtures (``tests/conftest.py``
overrides ``iam_login_user``), create and log in as ``APP``, never a fixed ``app``: two runs on
one server (pytest-xdist workers, two CI jobs, a developer and CI) each drop only their own
user at their end, never the one the other still logs in as. ``IAMPOOL_TEST_LOGIN_USER`` names
it (under xdist with the worker's id appended); the default is ``iampool_<pid>_<hex>``.
"""

from __future__ import annotations

import os

from iampool.testing._launch import LOGIN_USER_VARIABLE, login_user

APP = login_user(os.environ.get(LOGIN_USER_VARIABLE), LOGIN_USER_VARIABLE)
IAM_APP = f"IAM:{APP}"  # the Redshift database user GetClusterCredentials names for APP
OTHER = f"{APP}_other"  # a second user, for tests of a login as the wrong user
