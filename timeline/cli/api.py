"""`timeline api`: serve the HTTP query API (timeline/api/app.py) with uvicorn."""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import sys
import threading
from collections.abc import Iterator

from timeline.dsl.errors import UsageError
from timeline.runtime.settings import add_endpoint_options, endpoints

HANDLED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
APP_FACTORY = "timeline.api.app:app_from_environment"


def _server_class():
    import uvicorn

    class Server(uvicorn.Server):
        """uvicorn's server, except that a SIGINT/SIGTERM is a clean stop (exit status 0): uvicorn
        re-raises the captured signal after shutting down, so the process would die of it."""

        @contextlib.contextmanager
        def capture_signals(self) -> Iterator[None]:
            if threading.current_thread() is not threading.main_thread():
                yield
                return
            original = {sig: signal.signal(sig, self.handle_exit) for sig in HANDLED_SIGNALS}
            try:
                yield
            finally:
                for sig, handler in original.items():
                    signal.signal(sig, handler)

    return Server


def api_command(args: argparse.Namespace) -> int:
    import uvicorn

    from timeline.runtime.access import check_listen_address
    from timeline.store import open_store

    check_listen_address(args.host)  # no open API on the network: a token, or loopback only
    ep = endpoints(args)
    open_store(ep.store).close()  # a bad --store is reported before the server starts
    # The command line hands the servers to the HTTP face through the environment it reads,
    # and uvicorn imports the app by name: one face does not import the other.
    os.environ.update(ep.environment())
    from timeline.runtime.telemetry import uvicorn_log_config

    json_logs = uvicorn_log_config(args.log_format)  # None: uvicorn's own text format
    config = uvicorn.Config(APP_FACTORY, factory=True, host=args.host, port=args.port, log_level=args.log_level,
                            lifespan="on", access_log=args.access_log,
                            **({"log_config": json_logs} if json_logs else {}))
    server = _server_class()(config)
    try:
        server.run()
    except SystemExit as exc:  # uvicorn exits when it cannot bind or start up; it logged why
        if exc.code not in (0, None):
            raise UsageError(f"the API could not start on {args.host}:{args.port} (see the log above); if the "
                             "port is taken, pass --port") from None
    return 0


def add_parsers(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "api", help="serve the HTTP query API (OpenAPI at /docs)",
        description="Serve the HTTP API: register and remove timelines, read each key's timeline (live from "
                    "the workflows, or from the results store once the key has closed). The OpenAPI "
                    "description is at /docs and /openapi.json.")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on (default 8080)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"],
                   help="uvicorn log level (default info)")
    p.add_argument("--no-access-log", dest="access_log", action="store_false", help="do not log every request")
    p.add_argument("--log-format", choices=["text", "json"], default=None,
                   help="log lines as text or one JSON object each (default: TIMELINE_LOG_FORMAT, else text)")
    add_endpoint_options(p)  # --pulsar is accepted like everywhere else (the API does not use it)
    p.set_defaults(handler=api_command)


def main(argv: list[str] | None = None) -> int:
    """`python -m timeline.cli.api ...`: the same as `timeline api ...`."""
    from timeline.cli.main import _run

    parser = argparse.ArgumentParser(prog="timeline")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    add_parsers(sub)
    return _run(parser, ["api", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
