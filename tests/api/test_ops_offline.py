"""The operating routes and the served pages without any server behind the API (Temporal and
Pulsar unreachable): /health answers, /ready says what is missing, nothing loads from a CDN."""

from __future__ import annotations

import re
import warnings

import pytest

from timeline.api.app import create_app
from timeline.runtime.settings import Endpoints

with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    from fastapi.testclient import TestClient


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ops")
    ep = Endpoints(temporal="127.0.0.1:1", pulsar="pulsar://127.0.0.1:1", store=f"sqlite:///{tmp / 'r.db'}")
    with TestClient(create_app(ep)) as c:
        yield c


def test_health_and_ready_without_temporal(client):
    assert client.get("/health").json() == {"status": "ok"}
    r = client.get("/ready")
    assert r.status_code == 503
    checks = r.json()["checks"]
    assert checks["store"]["ok"] is True
    assert checks["temporal"]["ok"] is False and "127.0.0.1:1" in checks["temporal"]["detail"]


@pytest.mark.parametrize("page", ["/ui", "/docs", "/redoc"])
def test_pages_load_only_local_assets(client, page):
    html = client.get(page).text
    assets = re.findall(r'(?:src="|<link[^>]*href=")([^"]+)"', html)  # scripts, styles, icons
    assert assets, html
    for url in assets:
        assert url.startswith("/"), f"{page} loads {url} from elsewhere"
        assert client.get(url).status_code == 200, url


def test_intake_without_pulsar_is_a_503_saying_so(client):
    r = client.post("/v1/events", json={"meta": {"stream": "mediawiki.revision-create"}})
    assert r.status_code == 503 and "Pulsar is unreachable" in r.json()["error"]


def test_metrics_are_prometheus_text(client):
    client.get("/health")
    r = client.get("/metrics")
    assert r.headers["content-type"].startswith("text/plain")
    assert 'timeline_api_requests_total{method="GET",route="/health",status="200"}' in r.text
