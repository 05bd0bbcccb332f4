"""A multi-node run on one machine: every piece a separate process with its own state folder,
talking to the others only over the network, as they would from separate hosts.

    .venv/bin/python -m bench.multinode --sessions 1000

Starts the Temporal dev server, a pulsar-lite broker (partitioned topics, --partitions) and
PostgreSQL (the results store, from the `pgserver` wheel of the dev extra); then 2 workers,
2 feeders (one feeds, one stands by) and 2 API instances on different ports, each in
`STATE/nodes/<name>/` with its own TIMELINE_HOME. It registers the CIR timeline through
API 1 (with the bearer token), streams the sessions into the topic (keyed by session, so a
session stays in one partition), waits until every session's result in the store equals the
batch evaluator's, then reads every session's timeline through both APIs and compares them.
With --kill, the first worker and the feeding feeder get kill -9 mid-stream.
Exit status 0 when the two APIs and the batch evaluator agree on every session.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import msgspec

from timeline.dsl.batch import root_timelines
from timeline.producers.video_sessions import generate_sessions
from timeline.runtime import stack
from timeline.runtime.pulsar import create_producer, open_client
from timeline.store import open_store

ROOT = Path(__file__).resolve().parent.parent
CIR = (ROOT / "examples" / "cir.tl").read_text()
NAME = "cir"
TOPIC = "video-events"


@dataclass
class Node:
    name: str
    popen: subprocess.Popen
    log: Path

    def tail(self, n: int = 15) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def kill9(self) -> None:
        os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen.poll() is not None:
            return
        os.killpg(self.popen.pid, signal.SIGTERM)
        try:
            self.popen.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(timeout=10)


def start_postgres(folder: Path):
    """PostgreSQL 16 from the pgserver wheel (Unix socket in `folder`); returns (server, url)."""
    try:
        import pgserver
    except ImportError:
        sys.exit("bench.multinode needs pgserver (the dev extra): bash scripts/setup.sh")
    folder.mkdir(parents=True, exist_ok=True)
    folder.chmod(0o755)  # as root, pgserver runs PostgreSQL as its own user, which must reach it
    server = pgserver.get_server(folder, cleanup_mode="stop")
    return server, server.get_uri()


class Cluster:
    def __init__(self, state: Path, partitions: int, token: str):
        self.state, self.token = state, token
        self.nodes: list[Node] = []
        self.temporal = stack.start_temporal(state / "temporal")
        self.pulsar = stack.start_pulsar(state / "pulsar", partitions=partitions or None)
        self.postgres, self.store_url = start_postgres(state / "postgres")
        self.apis: list[str] = []

    def environment(self, home: Path, **extra: str) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("TIMELINE_")}
        env.update(TIMELINE_HOME=str(home), TIMELINE_TEMPORAL=self.temporal.address,
                   TIMELINE_PULSAR=self.pulsar.address, TIMELINE_STORE=self.store_url, **extra)
        return env

    def start(self, name: str, argv: list[str], **extra_env: str) -> Node:
        home = self.state / "nodes" / name
        home.mkdir(parents=True, exist_ok=True)
        log = home / f"{name}.log"
        with log.open("ab") as out:
            popen = subprocess.Popen([sys.executable, "-m", "timeline.cli.main", *argv], cwd=home,
                                     env=self.environment(home, **extra_env), stdin=subprocess.DEVNULL,
                                     stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        node = Node(name, popen, log)
        self.nodes.append(node)
        return node

    def start_api(self, name: str) -> str:
        port = stack.free_port()
        self.start(name, ["api", "--host", "127.0.0.1", "--port", str(port), "--no-access-log"],
                   TIMELINE_API_TOKEN=self.token)
        url = f"http://127.0.0.1:{port}"
        self.apis.append(url)
        return url

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.temporal.stop()
        self.pulsar.stop()
        self.postgres.cleanup()


def wait_until(condition, timeout: float, what: str, nodes=(), interval: float = 0.5):
    deadline = time.monotonic() + timeout
    while True:
        got = condition()
        if got:
            return got
        if time.monotonic() > deadline:
            logs = "\n".join(f"--- {n.name}\n{n.tail()}" for n in nodes)
            raise SystemExit(f"timed out after {timeout:g}s waiting for {what}\n{logs}")
        time.sleep(interval)


def produce(pulsar_url: str, records: list[dict]) -> None:
    client = open_client(pulsar_url)
    try:
        producer = create_producer(client, TOPIC)
        for r in records:
            producer.send_async(msgspec.json.encode(r), None, partition_key=str(r["session_id"]))
        producer.flush()
        producer.close()
    finally:
        client.close()


def run(args: argparse.Namespace) -> int:
    import httpx

    state = Path(args.state) if args.state else Path(tempfile.mkdtemp(prefix="timeline-multinode-"))
    state.mkdir(parents=True, exist_ok=True)
    token = secrets.token_hex(16)
    t0 = time.monotonic()
    cluster = Cluster(state, args.partitions, token)
    try:
        print(f"state: {state}\ntemporal {cluster.temporal.address}, pulsar {cluster.pulsar.address} "
              f"({args.partitions} partitions per topic), postgresql {cluster.store_url}")
        workers = [cluster.start(f"worker-{i}", ["worker"]) for i in (1, 2)]
        feeder_argv = ["feeder", "--topic", TOPIC, "--batch-size", str(args.batch_size)]
        feeders = [cluster.start("feeder-1", feeder_argv)]
        wait_until(lambda: "feeding from topic" in feeders[0].tail(), 120, "feeder-1 to subscribe", feeders)
        feeders.append(cluster.start("feeder-2", feeder_argv))
        api1, api2 = cluster.start_api("api-1"), cluster.start_api("api-2")
        with httpx.Client(timeout=60) as http:
            def up(url: str) -> bool:
                try:
                    return http.get(f"{url}/timelines").status_code == 200
                except httpx.HTTPError:
                    return False

            wait_until(lambda: up(api1) and up(api2), 180, "both API instances", cluster.nodes)
            body = {"name": NAME, "expression": CIR, "source_topic": TOPIC, "key_path": "session_id",
                    "time_path": "ts", "shards": args.shards, "idle_timeout_s": 3600}
            refused = http.post(f"{api1}/timelines", json=body)
            assert refused.status_code == 401, f"registering without the token: {refused.status_code}"
            reg = http.post(f"{api1}/timelines", json=body, headers={"Authorization": f"Bearer {token}"})
            assert reg.status_code in (200, 201), reg.text
            print(f"registered {NAME} through api-1 ({args.shards} shards); without the token: 401")

            records = generate_sessions(args.sessions, seed=args.seed, out_of_order=0.1).to_records()
            expected = root_timelines(CIR, records, "session_id", "ts")
            t_stream = time.monotonic()
            half = len(records) // 2
            produce(cluster.pulsar.address, records[:half])
            store = open_store(cluster.store_url)
            if args.kill:
                wait_until(lambda: len(store.keys(NAME)) >= min(10, len(expected)), 300, "first results",
                           cluster.nodes)
                workers[0].kill9()
                feeders[0].kill9()
                print("kill -9: worker-1 and feeder-1 (feeder-2 takes over)")
            produce(cluster.pulsar.address, records[half:])
            print(f"streamed {len(records):,} events of {args.sessions:,} sessions")

            def converged() -> bool:
                return all((r := store.result(NAME, k)) is not None and r.timeline == tl
                           for k, tl in expected.items())

            wait_until(converged, args.timeout, "every session's result to equal the batch evaluator's",
                       cluster.nodes, interval=2)
            t_final = time.monotonic() - t_stream
            print(f"every session final in the store after {t_final:.1f}s "
                  f"({len(records) / t_final:,.0f} events/s end to end)")

            def spans(api: str, key: str) -> list:
                got = http.get(f"{api}/timelines/{NAME}/keys/{key}")
                got.raise_for_status()
                return got.json()["spans"]

            keys1 = http.get(f"{api1}/timelines/{NAME}/keys").json()["keys"]
            keys2 = http.get(f"{api2}/timelines/{NAME}/keys").json()["keys"]
            assert keys1 == keys2 == sorted(expected), "the APIs list different keys"
            differ = [k for k in keys1 if spans(api1, k) != spans(api2, k)]
            print(f"read {len(keys1):,} sessions through api-1 and api-2: "
                  f"{len(keys1) - len(differ):,} equal, {len(differ)} differ")
            store.close()
        print(f"total {time.monotonic() - t0:.1f}s")
        return 0 if not differ else 1
    finally:
        cluster.stop()
        if not args.keep and not args.state:
            shutil.rmtree(state, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.multinode", description=__doc__.split("\n\n")[0])
    p.add_argument("--sessions", type=int, default=1000, help="video sessions to stream (default 1000)")
    p.add_argument("--seed", type=int, default=7)
    p.add_argument("--shards", type=int, default=4)
    p.add_argument("--partitions", type=int, default=0,
                   help="partitions per topic (default 0: a plain topic; see the README on pulsar-lite)")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--kill", action="store_true", help="kill -9 a worker and the feeding feeder mid-stream")
    p.add_argument("--timeout", type=float, default=900, help="longest wait for the results (s)")
    p.add_argument("--state", help="state folder (default: a temporary one, removed at the end)")
    p.add_argument("--keep", action="store_true", help="keep the temporary state folder (logs)")
    return run(p.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
