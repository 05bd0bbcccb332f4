"""Who may call the HTTP API: the settings, read from the environment.

`TIMELINE_API_TOKEN` (a bearer token for changing calls) and `TIMELINE_API_READ`
(`open` or `token`); timeline/api/auth.py enforces them per route, and
`check_listen_address` keeps an API without a token off the network.
"""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass

from timeline.dsl.errors import UsageError

TOKEN_VARIABLE = "TIMELINE_API_TOKEN"
READ_VARIABLE = "TIMELINE_API_READ"
READ_MODES = ("open", "token")


@dataclass(frozen=True)
class AuthSettings:
    token: str | None = None
    read: str = "open"

    @classmethod
    def from_environment(cls) -> AuthSettings:
        token = os.environ.get(TOKEN_VARIABLE) or None
        read = (os.environ.get(READ_VARIABLE) or "open").strip().lower()
        if read not in READ_MODES:
            raise UsageError(f"{READ_VARIABLE}={read!r} is not a read mode: use one of {', '.join(READ_MODES)}")
        if read == "token" and token is None:
            raise UsageError(f"{READ_VARIABLE}=token needs a token: set {TOKEN_VARIABLE}")
        return cls(token=token, read=read)


def is_loopback(host: str | None) -> bool:
    if host is None:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_listen_address(host: str, settings: AuthSettings | None = None) -> None:
    """UsageError for a non-loopback address without a token: the API would be open to the network."""
    settings = settings or AuthSettings.from_environment()
    if settings.token is None and not is_loopback(host):
        raise UsageError(f"refusing to serve the API on {host} without a token: anyone who reaches it could "
                         f"register and delete timelines. Set {TOKEN_VARIABLE} (changing calls then need "
                         "`Authorization: Bearer <token>`), or listen on 127.0.0.1")

