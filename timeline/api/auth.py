"""Who may call the API: a bearer token for calls that change something, a setting for reads.

Settings (environment, read when the app is created; timeline/runtime/access.py):

* `TIMELINE_API_TOKEN`: the shared secret. When set, every changing call
  (register, delete, intake, ...) needs `Authorization: Bearer <token>`.
  When unset, the API must not be reachable from other hosts: `timeline api`
  refuses to listen on anything but a loopback address (127.0.0.1, ::1)
  without a token, and the embedded stack binds to 127.0.0.1. (Whoever can
  reach a loopback-only API already runs code on this host.)
* `TIMELINE_API_READ`: `open` (default) lets anyone who reaches the API read;
  `token` makes reads need the same bearer token (then a token must be set).

Attach the dependencies to a route or a router:

    from fastapi import Depends
    from timeline.api.auth import require_change, require_read
    router = APIRouter(dependencies=[Depends(require_change)])

A bearer token rather than mutual TLS or OAuth: it is one environment variable
in docker-compose and one header for curl; put the API behind a TLS-terminating
proxy when it crosses an untrusted network (the token is sent in clear otherwise).
"""

from __future__ import annotations

import hmac

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from timeline.api.errors import ApiError
from timeline.runtime.access import READ_VARIABLE, TOKEN_VARIABLE, AuthSettings

_bearer = HTTPBearer(auto_error=False, description=f"the API token ({TOKEN_VARIABLE} of the server)")


def settings_of(request: Request) -> AuthSettings:
    """The app's settings (create_app stores them), else the environment's."""
    found = getattr(request.app.state, "auth", None)
    if found is None:
        found = request.app.state.auth = AuthSettings.from_environment()
    return found


def _check_token(settings: AuthSettings, credentials: HTTPAuthorizationCredentials | None, what: str) -> None:
    assert settings.token is not None
    if credentials is None:
        raise ApiError(401, f"{what} needs a bearer token: send the header `Authorization: Bearer <token>` "
                            f"with the token the server was given in {TOKEN_VARIABLE}")
    # Constant time: the comparison must not tell how much of a guess was right.
    if not hmac.compare_digest(credentials.credentials.encode(), settings.token.encode()):
        raise ApiError(401, f"the bearer token is not the one the server was given in {TOKEN_VARIABLE}")


async def require_change(request: Request,
                         credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """A call that changes something: the bearer token, when the server has one (see the module doc)."""
    settings = settings_of(request)
    if settings.token is not None:
        _check_token(settings, credentials, f"{request.method} {request.url.path}")


# Pages that say how to use the API, and the probes an orchestrator calls, stay open:
# they read no timeline (the explain page's data comes from the routes that do).
OPEN_READS = frozenset({"/", "/ui", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", "/health", "/ready"})


async def require_read(request: Request,
                       credentials: HTTPAuthorizationCredentials | None = Depends(_bearer)) -> None:
    """A read: open, or the bearer token when TIMELINE_API_READ=token (except OPEN_READS)."""
    settings = settings_of(request)
    if settings.read == "token" and request.url.path not in OPEN_READS:
        _check_token(settings, credentials, f"reading {request.url.path} ({READ_VARIABLE}=token)")

