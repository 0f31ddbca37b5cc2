"""What real STS checks on ``AssumeRole`` and moto does not.

moto hands out credentials for any role ARN, existing or not, with any ExternalId and any
DurationSeconds. STS refuses, in this order: a DurationSeconds outside 900..43200
(ValidationError), a role that does not exist or whose trust policy does not let the caller
assume it (AccessDenied, with the same message either way, so a caller cannot probe for role
names), and a DurationSeconds above the role's maximum session duration (ValidationError).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ._moto import Moto
from ._trust import Caller, UnsupportedPolicy, may_assume, parse_policy
from ._wire import Call, Response, error_response

__all__ = ["StsRules"]

_log = logging.getLogger("iampool.testing.aws")
_STS_DURATION = (900, 43200)


class StsRules:
    """Judges one AssumeRole call against the roles moto holds.

    Args:
        moto: where roles are looked up.
        caller_arn: the ARN of the identity an access key id belongs to.
    """

    def __init__(self, moto: Moto, caller_arn: Callable[[str | None], str]) -> None:
        self._moto = moto
        self._caller_arn = caller_arn

    def judge_assume_role(self, call: Call) -> Response | None:
        """``None`` when STS would issue credentials, else the error STS answers with."""
        duration = call.params.get("DurationSeconds")
        value = int(duration) if duration is not None and str(duration).isdigit() else None
        if duration is not None:
            low, high = _STS_DURATION
            if value is None or not low <= value <= high:
                bound = (
                    f"less than or equal to {high}"
                    if value is not None and value > high
                    else f"greater than or equal to {low}"
                )
                return error_response(
                    call,
                    "ValidationError",
                    f"1 validation error detected: Value '{duration}' at 'durationSeconds' "
                    f"failed to satisfy constraint: Member must have value {bound}",
                    400,
                )
        role_arn = str(call.params.get("RoleArn") or "")
        caller = Caller(
            arn=self._caller_arn(call.access_key_id),
            external_id=call.params.get("ExternalId"),
        )
        role = self._moto.find_role(role_arn)
        if role is None or not self._trusts(role.trust_policy, caller, role_arn):
            return error_response(call, "AccessDenied", self.denied_message(call, caller.arn), 403)
        if value is not None and value > role.max_session_duration:
            return error_response(
                call,
                "ValidationError",
                "The requested DurationSeconds exceeds the MaxSessionDuration set for this role.",
                400,
            )
        return None

    @staticmethod
    def denied_message(call: Call, caller_arn: str) -> str:
        """STS's AccessDenied message: who may not do what, on which role."""
        service = call.service or "aws"
        message = f"User: {caller_arn} is not authorized to perform: {service}:{call.api}"
        resource = call.params.get("RoleArn") if call.api == "AssumeRole" else None
        return f"{message} on resource: {resource}" if resource else message

    @staticmethod
    def _trusts(trust_policy: str, caller: Caller, role_arn: str) -> bool:
        try:
            return may_assume(parse_policy(trust_policy), caller)
        except UnsupportedPolicy as exc:
            _log.warning("denying AssumeRole on %s: %s", role_arn, exc)
            return False
