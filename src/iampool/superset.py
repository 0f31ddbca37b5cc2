"""Superset glue: read the ``aws_iam`` block of ``encrypted_extra`` and enforce the feature flag."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from ._config import AwsIamConfig
from ._errors import ConfigError, ConfigProblem, IamAuthDisabledError

__all__ = ["FEATURE_FLAG", "iam_config"]

FEATURE_FLAG = "AWS_DATABASE_IAM_AUTH"

_DISABLED_MESSAGE = (
    "AWS IAM database authentication is not enabled. "
    f'Set the {FEATURE_FLAG} feature flag to True (FEATURE_FLAGS = {{"{FEATURE_FLAG}": True}} '
    "in superset_config.py) to enable it."
)


def iam_config(
    encrypted_extra: str | bytes | Mapping[str, Any] | None,
    feature_flags: Mapping[str, Any],
) -> AwsIamConfig | None:
    """The database's IAM configuration, or ``None`` when it does not use IAM authentication.

    Returns ``None`` when there is no ``aws_iam`` block or it has ``"enabled": false``.

    Raises:
        IamAuthDisabledError: the block is enabled but ``AWS_DATABASE_IAM_AUTH`` is not true.
        ConfigError: the JSON or the block is invalid (every problem listed).
    """
    if encrypted_extra is None or encrypted_extra in ("", b""):
        return None
    if isinstance(encrypted_extra, (str, bytes, bytearray)):
        try:
            extra = json.loads(encrypted_extra)
        except (ValueError, RecursionError):
            # from_extra words the error (with line and column) without echoing the text.
            return AwsIamConfig.from_extra(encrypted_extra)
    else:
        extra = encrypted_extra
    if not isinstance(extra, Mapping):
        raise ConfigError(ConfigProblem("encrypted_extra", "must be a JSON object"))
    block = extra.get("aws_iam")
    if block is None:
        return None
    if isinstance(block, Mapping) and block.get("enabled") is False:
        return None
    config = AwsIamConfig.from_extra({"aws_iam": block})
    if not config.enabled:
        return None
    if feature_flags.get(FEATURE_FLAG) is not True:
        raise IamAuthDisabledError(_DISABLED_MESSAGE)
    return config
