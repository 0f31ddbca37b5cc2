"""Role trust policies, judged as STS judges ``AssumeRole`` (the slice tests need).

A caller may assume a role when a statement of its trust policy allows ``sts:AssumeRole`` to
the caller and no statement denies it. Supported, as IAM defines them:

- ``Principal``: ``"*"``, or ``{"AWS": ...}`` naming ``*``, an account (``"123456789012"`` or
  ``arn:aws:iam::123456789012:root``: every identity of that account), an IAM user ARN, an IAM
  role ARN (its sessions) or an assumed-role session ARN;
- ``Action``: ``sts:AssumeRole``, ``sts:*`` or ``*`` (case-insensitive), alone or in a list;
- ``Condition``: ``StringEquals``, ``StringNotEquals``, ``StringLike``, ``StringNotLike`` (each
  also ``...IfExists``) on ``sts:ExternalId``, ``aws:PrincipalArn``, ``aws:PrincipalAccount``.

Anything else (``NotPrincipal``, ``NotAction``, other operators or keys) raises
``UnsupportedPolicy``: the fake refuses to guess how AWS would judge it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Caller",
    "UnsupportedPolicy",
    "check_supported",
    "default_trust_policy",
    "may_assume",
    "parse_policy",
    "with_external_id",
]

_ACTIONS = frozenset({"sts:assumerole", "sts:*", "*"})
_OPERATORS = frozenset({"StringEquals", "StringNotEquals", "StringLike", "StringNotLike"})
_KEYS = frozenset({"sts:externalid", "aws:principalarn", "aws:principalaccount"})
_ACCOUNT = re.compile(r"\d{12}", re.ASCII)
_ARN = re.compile(r"arn:[\w-]+:(iam|sts)::(\d{12}):(.+)", re.ASCII)
_EXTERNAL_ID = "sts:ExternalId"


class UnsupportedPolicy(ValueError):
    """A trust policy uses an element the fake cannot judge (the message names it)."""


@dataclass(frozen=True)
class Caller:
    """Who calls AssumeRole, and with which ExternalId."""

    arn: str  # arn:aws:iam::<account>:user/<name> or arn:aws:sts::<account>:assumed-role/...
    external_id: str | None

    @property
    def account(self) -> str:
        match = _ARN.fullmatch(self.arn)
        return match.group(2) if match else ""

    @property
    def role_name(self) -> str | None:
        """The role of an assumed-role session; ``None`` for an IAM user."""
        match = _ARN.fullmatch(self.arn)
        if match and match.group(1) == "sts" and match.group(3).startswith("assumed-role/"):
            return match.group(3).split("/")[1]
        return None

    @property
    def principal_arn(self) -> str:
        """``aws:PrincipalArn``: for a role session, the role's ARN (without its path)."""
        role = self.role_name
        return self.arn if role is None else f"arn:aws:iam::{self.account}:role/{role}"


def default_trust_policy(accounts: list[str]) -> dict[str, Any]:
    """A trust policy that lets every identity of ``accounts`` assume the role."""
    principals = [f"arn:aws:iam::{account}:root" for account in dict.fromkeys(accounts)]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": principals[0] if len(principals) == 1 else principals},
                "Action": "sts:AssumeRole",
            }
        ],
    }


def parse_policy(policy: Mapping[str, Any] | str) -> dict[str, Any]:
    """A policy document as a dict, from a dict or its JSON text.

    Raises:
        UnsupportedPolicy: not a JSON object with a ``Statement``.
    """
    document: Any = policy
    if isinstance(policy, str):
        try:
            document = json.loads(policy)
        except ValueError:
            raise UnsupportedPolicy("the trust policy is not valid JSON") from None
    if not isinstance(document, Mapping) or "Statement" not in document:
        raise UnsupportedPolicy("a trust policy is a JSON object with a 'Statement'")
    return dict(document)


def with_external_id(policy: Mapping[str, Any], external_id: str | None) -> dict[str, Any]:
    """``policy`` whose Allow statements require exactly ``external_id`` (``None``: any or none).

    Other conditions stay as they are.
    """
    statements = []
    for statement in _statements(policy):
        changed = dict(statement)
        if changed.get("Effect") == "Allow":
            condition = {
                operator: {key: value for key, value in tests.items() if key != _EXTERNAL_ID}
                for operator, tests in dict(changed.get("Condition") or {}).items()
            }
            if external_id is not None:
                condition.setdefault("StringEquals", {})[_EXTERNAL_ID] = external_id
            condition = {operator: tests for operator, tests in condition.items() if tests}
            if condition:
                changed["Condition"] = condition
            else:
                changed.pop("Condition", None)
        statements.append(changed)
    return {**policy, "Statement": statements}


def check_supported(policy: Mapping[str, Any]) -> None:
    """Raise ``UnsupportedPolicy`` naming the first element the fake cannot judge."""
    probe = Caller(arn="arn:aws:iam::000000000000:user/probe", external_id=None)
    for statement in _statements(policy):
        _applies(statement, probe)


def may_assume(policy: Mapping[str, Any], caller: Caller) -> bool:
    """Whether the trust policy lets ``caller`` assume the role: an Allow, and no Deny.

    Raises:
        UnsupportedPolicy: a statement uses an element the fake cannot judge.
    """
    allowed = False
    for statement in _statements(policy):
        if _applies(statement, caller):
            if statement.get("Effect") == "Deny":
                return False
            allowed = True
    return allowed


def _statements(policy: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    statements = policy.get("Statement")
    if isinstance(statements, Mapping):
        statements = [statements]
    if not isinstance(statements, list) or not all(isinstance(s, Mapping) for s in statements):
        raise UnsupportedPolicy("'Statement' must be an object or a list of objects")
    return statements


def _applies(statement: Mapping[str, Any], caller: Caller) -> bool:
    for element in ("NotPrincipal", "NotAction", "NotResource"):
        if element in statement:
            raise UnsupportedPolicy(f"the fake cannot judge {element!r} in a trust policy")
    if statement.get("Effect") not in ("Allow", "Deny"):
        raise UnsupportedPolicy("'Effect' must be 'Allow' or 'Deny'")
    actions = [action.lower() for action in _strings(statement.get("Action"), "Action")]
    principal_ok = _principal_matches(statement.get("Principal"), caller)
    conditions_ok = _conditions_hold(statement.get("Condition") or {}, caller)
    return bool(_ACTIONS.intersection(actions)) and principal_ok and conditions_ok


def _principal_matches(principal: Any, caller: Caller) -> bool:
    if principal == "*":
        return True
    if not isinstance(principal, Mapping):
        raise UnsupportedPolicy("'Principal' must be '*' or an object such as {'AWS': ...}")
    unknown = set(principal) - {"AWS", "Service", "Federated", "CanonicalUser"}
    if unknown:
        raise UnsupportedPolicy(f"unknown principal type {sorted(unknown)[0]!r}")
    # every entry is judged (no short cut), so that check_supported sees each one
    named = [_names(entry, caller) for entry in _strings(principal.get("AWS"), "Principal")]
    return any(named)


def _names(entry: str, caller: Caller) -> bool:
    """Whether the ``AWS`` principal ``entry`` names the caller."""
    if entry == "*":
        return True
    if _ACCOUNT.fullmatch(entry):
        return entry == caller.account
    match = _ARN.fullmatch(entry)
    if match is None:
        raise UnsupportedPolicy(f"principal {entry!r} is not an account id or an IAM ARN")
    service, account, resource = match.groups()
    if account != caller.account:
        return False
    if service == "iam" and resource == "root":
        return True
    if service == "iam" and resource.startswith("role/"):
        return caller.role_name == resource.rsplit("/", 1)[-1]  # the role's sessions
    return entry == caller.arn


def _conditions_hold(conditions: Any, caller: Caller) -> bool:
    if not isinstance(conditions, Mapping):
        raise UnsupportedPolicy("'Condition' must be an object")
    values = {
        "sts:externalid": caller.external_id,
        "aws:principalarn": caller.principal_arn,
        "aws:principalaccount": caller.account,
    }
    held = True
    for operator, tests in conditions.items():
        base = operator.removesuffix("IfExists")
        if base not in _OPERATORS or not isinstance(tests, Mapping):
            raise UnsupportedPolicy(f"the fake cannot judge condition operator {operator!r}")
        for key, expected in tests.items():
            if key.lower() not in _KEYS:
                raise UnsupportedPolicy(f"the fake cannot judge condition key {key!r}")
            actual = values[key.lower()]
            patterns = _strings(expected, f"Condition {key}")
            held = held and _condition_holds(base, operator != base, actual, patterns)
    return held


def _condition_holds(
    operator: str, if_exists: bool, actual: str | None, expected: list[str]
) -> bool:
    negated = operator.startswith("StringNot")
    if actual is None:
        return if_exists or negated
    if operator.endswith("Like"):
        found = any(_like(pattern).fullmatch(actual) for pattern in expected)
    else:
        found = actual in expected
    return found != negated


def _like(pattern: str) -> re.Pattern[str]:
    """IAM's ``*`` (any run of characters) and ``?`` (one character); nothing else is special."""
    return re.compile(
        ".*".join(".".join(map(re.escape, part.split("?"))) for part in pattern.split("*")),
        re.DOTALL,
    )


def _strings(value: Any, element: str) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(item, str) for item in value):
        return value
    if value is None:
        return []
    raise UnsupportedPolicy(f"'{element}' must be a string or a list of strings")
