"""Watching a run from outside: Prometheus metrics and a JSON status page over HTTP.

The training loop publishes a snapshot after every step and, while it waits, every heartbeat
interval; a small HTTP server thread serves ``/metrics`` (Prometheus text, via prometheus_client)
and ``/status`` (JSON for ``dtrain status``) from the latest snapshot, so a scrape never touches
the trainer's state while it changes.

The port may be reachable from outside (the Kubernetes manifest binds 0.0.0.0), so what a
client can hold is bounded: at most ``MAX_CONNECTIONS`` are served at once (one thread each;
more are closed at once, without a thread) and a connection idle for ``TIMEOUT`` seconds is
dropped. Idle connections used to hold a thread and a descriptor each, forever, until the
coordinator could open no file.
"""

from __future__ import annotations

import logging
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from ..process import raise_fd_limit
from ..records import dumps

log = logging.getLogger("dtrain.monitor")

MAX_CONNECTIONS = 16  # scrapes served at once; a Prometheus server and dtrain status need few
TIMEOUT = 10.0  # seconds a connection may stay silent before it is dropped


class BoundedHTTPServer(ThreadingHTTPServer):
    """A threading HTTP server that serves at most ``limit`` connections at once and closes
    the others on arrival, so connections never cost more than ``limit`` threads."""

    daemon_threads = True
    request_queue_size = 64  # the listen backlog: a burst of scrapes waits in the kernel

    def __init__(self, address, handler, limit: int = MAX_CONNECTIONS):
        self.limit = limit
        self.active = 0
        self._lock = threading.Lock()
        super().__init__(address, handler)

    def process_request(self, request, client_address) -> None:
        with self._lock:
            full = self.active >= self.limit
            if not full:
                self.active += 1
        if full:
            log.debug("refused %s: %d connections already served", client_address, self.limit)
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._done()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._done()

    def _done(self) -> None:
        with self._lock:
            self.active -= 1


def _registry():
    """A private prometheus_client registry with dtrain's metrics (None when not installed)."""
    try:
        from prometheus_client import CollectorRegistry, Counter, Gauge
    except ImportError:
        return None, {}
    reg = CollectorRegistry()
    gauges = {
        "step": Gauge("dtrain_step", "Optimizer steps taken", registry=reg),
        "epoch": Gauge("dtrain_epoch", "Current epoch", registry=reg),
        "loss": Gauge("dtrain_loss", "Mean training loss of the last step", registry=reg),
        "lr": Gauge("dtrain_lr", "Learning rate of each param group", ["group"], registry=reg),
        "samples_per_s": Gauge("dtrain_samples_per_second", "Throughput of the last step",
                               registry=reg),
        "workers": Gauge("dtrain_live_workers", "Workers currently connected", registry=reg),
        "evictions": Counter("dtrain_evictions", "Workers evicted", registry=reg),
        "rejected": Counter("dtrain_rejected_messages", "Messages rejected", registry=reg),
        "compute": Gauge("dtrain_worker_compute_seconds", "Cumulative compute time per worker",
                         ["worker"], registry=reg),
        "comm": Gauge("dtrain_worker_comm_seconds",
                      "Cumulative communication time per worker", ["worker"], registry=reg),
    }
    return reg, gauges


class Monitor:
    """Serves /metrics and /status on ``host:port`` (port 0 picks one) until ``close()``."""

    def __init__(self, port: int = 0, host: str = "127.0.0.1", *, timeout: float = TIMEOUT,
                 max_connections: int = MAX_CONNECTIONS):
        raise_fd_limit()
        self.registry, self.metrics = _registry()
        self.snapshot: dict = {"state": "starting", "started": time.time()}
        self._counted = {"evictions": 0, "rejected": 0}
        monitor = self

        class Handler(BaseHTTPRequestHandler):
            def setup(self):
                self.timeout = timeout  # every read and write of the connection
                super().setup()

            def do_GET(self):
                if self.path.split("?")[0] == "/status":
                    body = dumps(monitor.status()).encode()
                    self._reply(200, "application/json", body)
                elif self.path.split("?")[0] == "/metrics":
                    if monitor.registry is None:
                        self._reply(501, "text/plain",
                                    b"prometheus_client is not installed: "
                                    b"pip install 'dtrain[metrics]'\n")
                        return
                    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

                    self._reply(200, CONTENT_TYPE_LATEST, generate_latest(monitor.registry))
                else:
                    self._reply(404, "text/plain", b"try /metrics or /status\n")

            def _reply(self, code, kind, body):
                self.send_response(code)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, fmt, *args):
                log.debug("%s " + fmt, self.address_string(), *args)

        self.server = BoundedHTTPServer((host, port), Handler, max_connections)
        self.address = f"{host}:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, name="dtrain-monitor",
                                       daemon=True)
        self.thread.start()
        log.info("metrics on http://%s/metrics, status on http://%s/status", self.address,
                    self.address)

    def active(self) -> int:
        """Connections being served right now."""
        return self.server.active

    def status(self) -> dict:
        """The latest snapshot, with heartbeat ages computed now."""
        snap = dict(self.snapshot)
        now = time.monotonic()
        workers = []
        for w in snap.get("workers", []):
            w = dict(w)
            w["last_heartbeat_s"] = round(now - w.pop("seen", now), 3)
            workers.append(w)
        snap["workers"] = workers
        return snap

    def publish(self, **fields) -> None:
        """Replace parts of the snapshot (called from the training thread only)."""
        snap = dict(self.snapshot)
        snap.update(fields)
        self.snapshot = snap
        m = self.metrics
        if not m:
            return
        if "workers" in fields:
            m["workers"].set(len(fields["workers"]))
            for w in fields["workers"]:
                m["compute"].labels(str(w["id"])).set(w.get("compute_s", 0.0))
                m["comm"].labels(str(w["id"])).set(w.get("comm_s", 0.0))
        for key in ("evictions", "rejected"):
            if key in fields and fields[key] > self._counted[key]:
                m[key].inc(fields[key] - self._counted[key])
                self._counted[key] = fields[key]

    def on_step(self, record: dict) -> None:
        """Publish one step's record."""
        lr = record["lr"] if isinstance(record["lr"], list) else [record["lr"]]
        self.publish(state="training", step=record["step"] + 1, epoch=record["epoch"],
                     loss=record["loss"], lr=lr, samples_per_s=record["samples_per_s"])
        if self.metrics:
            self.metrics["step"].set(record["step"] + 1)
            self.metrics["epoch"].set(record["epoch"])
            self.metrics["loss"].set(record["loss"])
            self.metrics["samples_per_s"].set(record["samples_per_s"])
            for i, value in enumerate(lr):
                self.metrics["lr"].labels(str(i)).set(value)

    def close(self) -> None:
        """Stop serving and close the port."""
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)
