"""The JWT signing secret: ``JWT_SECRET`` when set (local runs, tests), otherwise an SSM SecureString
``/loan-crm/{stage}/jwt-secret`` cached for five minutes, so rotating it needs no deploy."""

from __future__ import annotations

from chalicelib.config import Settings

SECRET_CACHE_SECONDS = 300


def jwt_secret(settings: Settings) -> str:
    if settings.jwt_secret:
        return settings.jwt_secret
    # Imported here: parameters pulls in extra modules that API calls with JWT_SECRET never need.
    from aws_lambda_powertools.utilities import parameters

    value = parameters.get_parameter(
        f"{settings.parameter_prefix}jwt-secret", decrypt=True, max_age=SECRET_CACHE_SECONDS
    )
    return str(value)
