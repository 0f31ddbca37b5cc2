"""Redshift Serverless: GetCredentials for the login, GetWorkgroup for the endpoint."""

from __future__ import annotations

from .._aws import (
    AwsApi,
    AwsCredentials,
    RedshiftLogin,
    get_serverless_credentials,
    get_workgroup_endpoint,
)
from .._config import AwsIamConfig
from .redshift import RedshiftApi

__all__ = ["SERVERLESS"]


async def _workgroup_login(api: AwsApi, aws: AwsCredentials, config: AwsIamConfig) -> RedshiftLogin:
    assert config.workgroup_name is not None
    return await get_serverless_credentials(
        api,
        aws,
        region=config.region,
        workgroup_name=config.workgroup_name,
        db_name=config.db_name,
        duration=config.password_duration,
    )


async def _workgroup_endpoint(
    api: AwsApi, aws: AwsCredentials, config: AwsIamConfig
) -> tuple[str, int]:
    assert config.workgroup_name is not None
    return await get_workgroup_endpoint(
        api, aws, region=config.region, workgroup_name=config.workgroup_name
    )


SERVERLESS = RedshiftApi(
    name="workgroup",
    selector=lambda config: config.workgroup_name,
    login=_workgroup_login,
    endpoint=_workgroup_endpoint,
)
