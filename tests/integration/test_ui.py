"""The explain page in a real headless browser (the system's Chromium driven by Playwright),
on the real stack: Temporal dev server, pulsar-lite, a worker, a feeder and `timeline api`
processes. Events go to Pulsar; the page must plot every node's timeline of a key with the
values the workflows computed, update live, and `/docs` must render with no request leaving
the machine. The run saves screenshots under tests/artifacts/ (ignored by git).
"""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path

import httpx
import pytest
from runtime_helpers import produce, spawn

from timeline.runtime.stack import free_port

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "tests" / "artifacts"
CIR = (ROOT / "examples" / "cir.tl").read_text()
S1 = [json.loads(line) for line in (ROOT / "examples" / "cir_session.jsonl").read_text().splitlines()]


def browser_path() -> str:
    """The system Chromium (installed by scripts/browser.sh if need be), or skip saying why."""
    found = subprocess.run(["bash", str(ROOT / "scripts" / "browser.sh")], capture_output=True, text=True)
    if found.returncode != 0:
        pytest.skip(f"no browser for the explain page's test: {found.stderr.strip()}")
    return found.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def stack(temporal_server, pulsar_server, tmp_path_factory, wait_for):
    tmp = tmp_path_factory.mktemp("ui")
    topic = f"ui-events-{uuid.uuid4().hex[:6]}"
    ep = ["--temporal", temporal_server.address, "--pulsar", pulsar_server.address,
          "--store", f"sqlite:///{tmp / 'results.db'}"]
    port = free_port()
    procs = [spawn("ui-worker", ["worker", *ep], tmp / "logs"),
             spawn("ui-feeder", ["feeder", "--topic", topic, "--linger-ms", "50", *ep], tmp / "logs"),
             spawn("ui-api", ["api", "--port", str(port), "--no-access-log", *ep], tmp / "logs")]
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: httpx.get(f"{base}/ready", timeout=5).status_code == 200, timeout=120,
                 message=f"the API's /ready (log: {procs[2].log})")
        yield base, topic, pulsar_server.address, procs
    finally:
        for p in procs:
            p.stop()


def test_explain_page_plots_every_node_of_a_key_live(stack, wait_for):
    from playwright.sync_api import sync_playwright

    base, topic, pulsar_url, procs = stack
    chromium = browser_path()
    name = f"cir-ui-{uuid.uuid4().hex[:4]}"
    r = httpx.post(f"{base}/timelines", timeout=60, json={
        "name": name, "expression": CIR, "source_topic": topic, "key_path": "session_id", "time_path": "ts",
        "shards": 1})
    assert r.status_code == 201, r.text
    first, rest = S1[:3], S1[3:]
    produce(pulsar_url, topic, [json.dumps(e).encode() for e in first])

    def tree() -> dict:
        t = httpx.get(f"{base}/timelines/{name}/keys/s1/tree", timeout=30)
        return t.json() if t.status_code == 200 else {}

    wait_for(lambda: tree().get("nodes", [{}])[0].get("watermark") == first[-1]["ts"], timeout=180,
             message=f"the root's watermark at {first[-1]['ts']} (logs: {[str(p.log) for p in procs]})")

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    outside: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})

            def local_only(route):  # everything must come from the API itself: no CDN
                if route.request.url.startswith(base):
                    route.continue_()
                else:
                    outside.append(route.request.url)
                    route.abort()

            page.route("**/*", local_only)
            page.goto(f"{base}/ui?timeline={name}")
            page.wait_for_selector("#tree ul.tree li[data-node]", timeout=60_000)
            assert page.locator("#tree li[data-node]").count() == 7  # the CIR plan: 7 nodes, nested
            page.fill("#key-search", "s1")
            page.click("#keys li[data-key='s1']", timeout=60_000)
            page.wait_for_selector(".node-row", timeout=60_000)
            assert page.locator(".node-row").count() == 7

            # Live: the rest of the session arrives while the page is open; the page follows.
            produce(pulsar_url, topic, [json.dumps(e).encode() for e in rest])
            root_id = tree()["root"]
            last_start = page.locator(f".node-row[data-node='{root_id}'] line.line").last
            wait_for(lambda: last_start.get_attribute("data-start") == "9000", timeout=180,
                     message="the page to show the root's span from 9000 (live update)")
            page.screenshot(path=str(ARTIFACTS / "ui-explain.png"), full_page=True)

            # What is plotted is what the workflows hold, node by node.
            api_tree = tree()
            for node in api_tree["nodes"]:
                row = page.locator(f".node-row[data-node='{node['node_id']}']")
                assert row.get_attribute("data-kind") == node["kind"]
                marks = row.locator("line.line" if node["kind"] == "numeric" else "rect.band")
                plotted = [(int(marks.nth(i).get_attribute("data-start")),
                            json.loads(marks.nth(i).get_attribute("data-value")))
                           for i in range(marks.count())]
                assert plotted == [(s["start"], s["value"]) for s in node["spans"]], node["label"]
            root = page.locator(f".node-row[data-node='{root_id}'] line.line")
            assert [root.nth(i).get_attribute("data-value") for i in range(root.count())] == ["0", "0", "2000"]
            state = page.locator(".node-row[data-kind='state'] rect.band")
            assert [state.nth(i).get_attribute("data-value") for i in range(state.count())] == [
                '"play"', '"seek"', '"buffer"', '"play"']
            assert page.locator("rect.band[data-provisional='true']").count() > 0  # open spans are marked
            assert page.locator(".node-row line.watermark").count() == 7

            # The API docs render offline (Swagger UI from local assets).
            page.goto(f"{base}/docs")
            page.wait_for_selector("#swagger-ui .information-container", timeout=60_000)
            assert "Timeline" in page.inner_text("#swagger-ui .information-container")
            page.screenshot(path=str(ARTIFACTS / "docs.png"))
        finally:
            browser.close()
    assert outside == [], f"the page asked for something outside the API: {outside}"


def test_unknown_stretches_are_shaded(stack, wait_for):
    """A timeline that is unknown until a field appears: the page shades the unknown span."""
    from playwright.sync_api import sync_playwright

    base, topic, pulsar_url, _ = stack
    chromium = browser_path()
    name = f"unknown-ui-{uuid.uuid4().hex[:4]}"
    expression = 'latest_event_to_state(bitrate) > 3000 || has_existed(playerStateChange == "buffer")'
    r = httpx.post(f"{base}/timelines", timeout=60, json={
        "name": name, "expression": expression, "source_topic": topic, "key_path": "session_id",
        "time_path": "ts", "shards": 1})
    assert r.status_code == 201, r.text
    key = f"u-{uuid.uuid4().hex[:4]}"
    produce(pulsar_url, topic, [json.dumps({"session_id": key, "ts": 1000, "playerStateChange": "play"}).encode(),
                                json.dumps({"session_id": key, "ts": 4000, "playerStateChange": "buffer"}).encode()])
    root = wait_for(lambda: (httpx.get(f"{base}/timelines/{name}/keys/{key}/tree", timeout=30).json()
                             .get("nodes", [{}])[0]), timeout=180, message="the root of the new key")
    wait_for(lambda: httpx.get(f"{base}/timelines/{name}/keys/{key}/tree", timeout=30).json()["nodes"][0]
             ["watermark"] == 4000, timeout=180, message="the root's watermark at 4000")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True,
                                     args=["--no-sandbox", "--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 700})
            page.goto(f"{base}/ui?timeline={name}")
            page.wait_for_selector(f"#keys li[data-key='{key}']", timeout=60_000)
            page.click(f"#keys li[data-key='{key}']")
            row = page.locator(f".node-row[data-node='{root['node_id']}']")
            row.locator("rect.band").first.wait_for(timeout=60_000)
            bands = row.locator("rect.band")
            assert [(bands.nth(i).get_attribute("data-start"), bands.nth(i).get_attribute("data-value"))
                    for i in range(bands.count())] == [("1000", "null"), ("4000", "true")]
            assert "unknown" in (bands.nth(0).get_attribute("class") or "")
            assert bands.nth(0).get_attribute("fill") == "url(#hatch-unknown)"
            page.screenshot(path=str(ARTIFACTS / "ui-unknown.png"), full_page=True)
        finally:
            browser.close()
