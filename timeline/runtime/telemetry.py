"""Operating the processes: logging (text or structured JSON), Prometheus endpoints, rate-limited logs.

* `configure_logging(level, fmt)`: the root logger, as text or one JSON object per line
  (python-json-logger: `time`, `level`, `logger`, `message`, plus any `extra=` fields).
  Defaults come from TIMELINE_LOG_LEVEL and TIMELINE_LOG_FORMAT (`text` or `json`), so
  `TIMELINE_LOG_FORMAT=json timeline up` makes every process of the stack log JSON.
* `serve_metrics(port)`: this process's Prometheus metrics (prometheus-client's default
  registry) on http://HOST:PORT/metrics.
* `temporal_runtime_with_metrics(address)`: makes the Temporal SDK export its own runtime
  metrics (workflow task latency, schedule-to-start, polls, ...) to Prometheus on `address`;
  call it before the first Temporal client of the process is created.
* `RateLimitedLog`: log a line per kind of problem at most once per interval, and say how
  many were suppressed meanwhile.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

LOG_FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(name)s %(levelname)s %(message)s"


def log_format(fmt: str | None = None) -> str:
    value = (fmt or os.environ.get("TIMELINE_LOG_FORMAT") or "text").lower()
    return value if value in LOG_FORMATS else "text"


def json_formatter() -> logging.Formatter:
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter("%(asctime)s %(levelname)s %(name)s %(message)s",
                         rename_fields={"asctime": "time", "levelname": "level", "name": "logger"})


def configure_logging(level: str | None = None, fmt: str | None = None) -> None:
    """Configure the root logger once for a process (text, or JSON lines)."""
    level = (level or os.environ.get("TIMELINE_LOG_LEVEL") or "INFO").upper()
    handler = logging.StreamHandler()
    handler.setFormatter(json_formatter() if log_format(fmt) == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)


def uvicorn_log_config(fmt: str | None = None) -> dict | None:
    """uvicorn's logging configuration for the format (None: uvicorn's own, for text)."""
    if log_format(fmt) != "json":
        return None
    formatter = {"()": "pythonjsonlogger.json.JsonFormatter",
                 "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
                 "rename_fields": {"asctime": "time", "levelname": "level", "name": "logger"}}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": formatter},
        "handlers": {"default": {"class": "logging.StreamHandler", "formatter": "json"}},
        "root": {"handlers": ["default"], "level": "INFO"},
        "loggers": {name: {"handlers": ["default"], "level": "INFO", "propagate": False}
                    for name in ("uvicorn", "uvicorn.error", "uvicorn.access")},
    }


def serve_metrics(port: int, host: str = "0.0.0.0") -> None:
    """Serve the process's Prometheus metrics on HOST:PORT/metrics (a daemon thread)."""
    from prometheus_client import start_http_server

    start_http_server(port, addr=host)
    logging.getLogger("timeline.metrics").info("Prometheus metrics on http://%s:%d/metrics", host, port)


def temporal_runtime_with_metrics(address: str) -> None:
    """Make the Temporal SDK (clients and workers of this process) export its metrics to Prometheus."""
    from temporalio.runtime import PrometheusConfig, Runtime, TelemetryConfig

    Runtime.set_default(Runtime(telemetry=TelemetryConfig(metrics=PrometheusConfig(bind_address=address))),
                        error_if_already_set=False)
    logging.getLogger("timeline.metrics").info("Temporal SDK metrics on http://%s/metrics", address)


class RateLimitedLog:
    """At most one line per key per `interval_s`; the next line says how many were held back."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0,
                 clock: Callable[[], float] = time.monotonic):
        self.logger, self.interval_s, self.clock = logger, interval_s, clock
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}
        self._lock = threading.Lock()

    def log(self, level: int, key: str, message: str, *args: object) -> bool:
        """Log `message % args` unless `key` was logged less than `interval_s` ago; True if logged."""
        now = self.clock()
        with self._lock:
            last = self._last.get(key)
            if last is not None and now - last < self.interval_s:
                self._suppressed[key] = self._suppressed.get(key, 0) + 1
                return False
            held = self._suppressed.pop(key, 0)
            self._last[key] = now
            if len(self._last) > 10_000:  # many distinct keys: forget the oldest
                for old in sorted(self._last, key=self._last.__getitem__)[:5_000]:
                    self._last.pop(old, None)
                    self._suppressed.pop(old, None)
        if held:
            message += f" (and {held} more like it in the last {self.interval_s:g}s, not logged)"
        self.logger.log(level, message, *args)
        return True
