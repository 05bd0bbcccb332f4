"""Where the servers are: flags, then environment, then the embedded stack's
`.timeline/stack.json` (written by `timeline up`), then the defaults."""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path

DEFAULT_HOME = ".timeline"


@dataclass(frozen=True)
class Endpoints:
    temporal: str
    pulsar: str
    store: str
    namespace: str = "default"
    api: str | None = None

    def environment(self) -> dict[str, str]:
        """These endpoints as the TIMELINE_* variables `endpoints` reads (for a child process)."""
        env = {"TIMELINE_TEMPORAL": self.temporal, "TIMELINE_PULSAR": self.pulsar, "TIMELINE_STORE": self.store,
               "TIMELINE_NAMESPACE": self.namespace}
        if self.api:
            env["TIMELINE_API"] = self.api
        return env


def home(args: argparse.Namespace | None = None) -> Path:
    value = getattr(args, "home", None) or os.environ.get("TIMELINE_HOME") or DEFAULT_HOME
    return Path(value)


def stack_file(state: Path) -> Path:
    return state / "stack.json"


def read_stack(state: Path) -> dict:
    try:
        return json.loads(stack_file(state).read_text())
    except (OSError, ValueError):
        return {}


def endpoints(args: argparse.Namespace) -> Endpoints:
    stack = read_stack(home(args))

    def pick(flag: str, env: str, key: str, default: str) -> str:
        return getattr(args, flag, None) or os.environ.get(env) or stack.get(key) or default

    return Endpoints(
        temporal=pick("temporal", "TIMELINE_TEMPORAL", "temporal", "127.0.0.1:7233"),
        pulsar=pick("pulsar", "TIMELINE_PULSAR", "pulsar", "pulsar://127.0.0.1:6650"),
        store=pick("store", "TIMELINE_STORE", "store", f"sqlite:///{home(args) / 'results.db'}"),
        namespace=pick("namespace", "TIMELINE_NAMESPACE", "namespace", "default"),
        api=getattr(args, "api", None) or os.environ.get("TIMELINE_API") or stack.get("api"),
    )


def add_endpoint_options(p: argparse.ArgumentParser, temporal=True, pulsar=True, store=True) -> None:
    g = p.add_argument_group("servers (default: flags, then TIMELINE_* environment, then the running "
                             "`timeline up` stack, then localhost defaults)")
    g.add_argument("--home", metavar="DIR", help="state folder of the embedded stack (default .timeline, "
                                                 "or TIMELINE_HOME)")
    if temporal:
        g.add_argument("--temporal", metavar="HOST:PORT", help="Temporal frontend (TIMELINE_TEMPORAL)")
        g.add_argument("--namespace", metavar="NS", help="Temporal namespace (TIMELINE_NAMESPACE, default default)")
    if pulsar:
        g.add_argument("--pulsar", metavar="URL", help="Pulsar service URL (TIMELINE_PULSAR)")
    if store:
        g.add_argument("--store", metavar="URL", help="results store, sqlite:///PATH or postgresql://USER:PASSWORD@HOST:PORT/DB (TIMELINE_STORE)")


# Workflow tasks run in threads of one worker process, so at once they share one core
# (Python's GIL), and a task's wall time grows with how many run beside it. The SDK fails
# a task that does not yield within 2 s (deadlock detection): with its default (up to 100
# at once) a 100,000-session run had tasks failing that way on 2 loaded cores. A few at
# once keep the core busy while others wait on the server (`timeline worker
# --max-concurrent-workflow-tasks`).
WORKFLOW_TASK_SLOTS = 4


def whole_number_at_least(minimum: int):
    """An argparse type: a whole number of at least `minimum`, else a clear usage error."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a whole number > 0" if minimum == 1 else
                f"{text!r} is not a whole number of at least {minimum}")
        return value

    return parse
