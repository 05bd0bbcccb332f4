"""Who may call the API: a bearer token for changing calls, a setting for reads, and no
token-less API on the network. Temporal is not needed: authentication comes first."""

from __future__ import annotations

import socket
import warnings

import pytest

from timeline.dsl.errors import UsageError
from timeline.runtime.access import AuthSettings, check_listen_address
from timeline.runtime.settings import Endpoints

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

from timeline.api.app import create_app

TOKEN = "s3cret-token"
REGISTER = {"name": "t", "expression": "has_existed(x == 1)", "source_topic": "ev", "key_path": "k",
            "time_path": "ts"}


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def api(tmp_path, monkeypatch):
    """An app factory: the API with the given auth environment (Temporal unreachable on purpose)."""
    clients = []

    def make(token: str | None = None, read: str | None = None) -> TestClient:
        for name, value in (("TIMELINE_API_TOKEN", token), ("TIMELINE_API_READ", read)):
            if value is None:
                monkeypatch.delenv(name, raising=False)
            else:
                monkeypatch.setenv(name, value)
        ep = Endpoints(temporal=f"127.0.0.1:{_closed_port()}", pulsar="pulsar://127.0.0.1:1",
                       store=f"sqlite:///{tmp_path / 'results.db'}")
        client = TestClient(create_app(ep)).__enter__()
        clients.append(client)
        return client

    yield make
    for c in clients:
        c.__exit__(None, None, None)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_changing_calls_need_the_token(api):
    client = api(token=TOKEN)
    for method, url, body in (("POST", "/timelines", REGISTER), ("DELETE", "/timelines/t", None)):
        missing = client.request(method, url, json=body)
        assert missing.status_code == 401, missing.text
        assert "Authorization: Bearer" in missing.json()["error"]
        wrong = client.request(method, url, json=body, headers=_bearer("guess"))
        assert wrong.status_code == 401 and "not the one" in wrong.json()["error"]
    # With the token the call gets past authentication: the timeline is unknown (404) ...
    assert client.delete("/timelines/t", headers=_bearer(TOKEN)).status_code == 404
    # ... and a bad registration is judged on its merits (400/422), not refused at the door.
    bad = client.post("/timelines", json={**REGISTER, "expression": "has_existed("}, headers=_bearer(TOKEN))
    assert bad.status_code in (400, 422), bad.text


def test_reads_are_open_by_default_even_with_a_token(api):
    client = api(token=TOKEN)
    assert client.get("/timelines").status_code == 200
    assert client.get("/timelines/t").status_code == 404


def test_reads_can_require_the_token(api):
    client = api(token=TOKEN, read="token")
    refused = client.get("/timelines")
    assert refused.status_code == 401 and "TIMELINE_API_READ=token" in refused.json()["error"]
    assert client.get("/timelines", headers=_bearer(TOKEN)).status_code == 200
    assert client.get("/docs").status_code == 200  # the documentation stays readable


def test_without_a_token_the_local_api_accepts_changes(api):
    client = api()
    assert client.delete("/timelines/t").status_code == 404  # past authentication


def test_the_openapi_description_names_the_bearer_scheme(api):
    schema = api(token=TOKEN).get("/openapi.json").json()
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"


def test_no_api_on_the_network_without_a_token():
    check_listen_address("127.0.0.1", AuthSettings())
    check_listen_address("::1", AuthSettings())
    check_listen_address("0.0.0.0", AuthSettings(token=TOKEN))
    with pytest.raises(UsageError, match="TIMELINE_API_TOKEN"):
        check_listen_address("0.0.0.0", AuthSettings())


def test_timeline_api_refuses_a_public_host_without_a_token(monkeypatch, capsys):
    from timeline.cli.main import main

    monkeypatch.delenv("TIMELINE_API_TOKEN", raising=False)
    code = main(["api", "--host", "0.0.0.0", "--port", str(_closed_port())])
    assert code != 0
    assert "refusing to serve the API on 0.0.0.0 without a token" in capsys.readouterr().err


def test_bad_read_mode_is_a_usage_error(monkeypatch):
    monkeypatch.setenv("TIMELINE_API_READ", "everyone")
    with pytest.raises(UsageError, match="not a read mode"):
        AuthSettings.from_environment()
    monkeypatch.setenv("TIMELINE_API_READ", "token")
    monkeypatch.delenv("TIMELINE_API_TOKEN", raising=False)
    with pytest.raises(UsageError, match="needs a token"):
        AuthSettings.from_environment()
