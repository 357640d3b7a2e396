"""Where the local stack lives and how its processes reach each other: the stage, the ports, the
state directory, and the AWS environment every client of the local stage gets (endpoints, region and
fake credentials). Shared by the runner, the demo book and the ops CLI's ``--local``."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STATE_DIR = ROOT / ".local"
"""Everything a local run keeps: DynamoDB data, the JWT secret, logs, the DynamoDB Local npm package."""

STAGE = "local"
REGION = "ap-south-1"
HOST = "127.0.0.1"
DEFAULT_PORTS = {"DYNAMODB_PORT": 8000, "MOTO_PORT": 5001, "API_PORT": 8080}
# Services the app reaches outside DynamoDB; all of them are answered by the one moto server.
MOTO_SERVICES = ("SSM", "SNS", "CLOUDWATCH", "SCHEDULER")


class StartupError(Exception):
    """Something the user can fix (a port taken, Java missing, a child that died); shown without a traceback."""


@dataclass(frozen=True)
class Ports:
    dynamodb: int
    moto: int
    api: int

    @classmethod
    def from_env(cls, env: Mapping[str, str] = os.environ) -> Ports:
        values = {}
        for name, default in DEFAULT_PORTS.items():
            raw = env.get(name) or str(default)
            if not raw.isdigit() or not 0 < int(raw) < 65536:
                raise StartupError(f"{name}={raw!r} is not a port number")
            values[name] = int(raw)
        return cls(values["DYNAMODB_PORT"], values["MOTO_PORT"], values["API_PORT"])

    def named(self) -> dict[str, int]:
        return dict(zip(DEFAULT_PORTS, (self.dynamodb, self.moto, self.api), strict=True))


def url(port: int) -> str:
    return f"http://{HOST}:{port}"


def aws_environment(ports: Ports) -> dict[str, str]:
    """What every AWS client of the local stage needs: endpoints, region and fake credentials."""
    env = {
        "STAGE": STAGE,
        "AWS_DEFAULT_REGION": REGION,
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": "local",
        "AWS_SECRET_ACCESS_KEY": "local",
        "AWS_ENDPOINT_URL_DYNAMODB": url(ports.dynamodb),
    }
    env.update({f"AWS_ENDPOINT_URL_{service}": url(ports.moto) for service in MOTO_SERVICES})
    return env


def stack_environment(ports: Ports, jwt_secret: str) -> dict[str, str]:
    """This process's environment, made safe for the local stage.

    A developer's own AWS profile, session token or global endpoint must never leak in: with them a
    call the stage does not redirect could reach a real account.
    """
    env = {k: v for k, v in os.environ.items() if k not in {"AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"}}
    env.update(aws_environment(ports))
    env["JWT_SECRET"] = jwt_secret
    env["PYTHONUNBUFFERED"] = "1"
    return env
