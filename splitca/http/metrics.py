"""The Prometheus metrics of the CA server (prometheus-client): store gauges on scrape, request counters.

Two kinds of numbers, made consistent across worker processes in two ways:

- **What the CA holds** (pending CSRs, certificates, the CRL, the CA certificate, each
  compile master's CRL) is read from the store when scraped, through a use case
  (``CertificateAuthority.metrics_snapshot``), and cached for ``SNAPSHOT_TTL`` seconds in
  each process. Every worker and every replica reads the same store, so any of them
  answers the same.
- **What this server did** (requests by route and status, store errors, the store's ping
  latency) is counted in process. With several workers (``splitca serve`` forks them) the
  counters live in prometheus-client's multiprocess directory (``PROMETHEUS_MULTIPROC_DIR``,
  which ``serve`` sets up before forking), so a scrape that reaches any worker sums all.
  Under mod_wsgi they do too if the operator sets that variable for Apache; otherwise
  they are the answering process's own.

prometheus_client is imported lazily, on the first request a process serves, so that the
multiprocess directory set by ``serve`` before forking is the one it uses.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from splitca.errors import StoreError

if TYPE_CHECKING:
    from splitca.core.usecases.health import Snapshot

__all__ = ["MULTIPROC_ENV", "SNAPSHOT_TTL", "Metrics"]

log = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
SNAPSHOT_TTL = 5.0  # seconds a scrape's store numbers are reused for the next scrapes
_METHODS = frozenset({"GET", "HEAD", "PUT", "POST", "DELETE"})
_PING_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


_LIVE: weakref.WeakSet[Metrics] = weakref.WeakSet()  # every Metrics of this process


def _after_fork() -> None:
    """In a forked child: the parent's instruments (and locks) are not this process's."""
    for metrics in list(_LIVE):
        metrics._forget()


os.register_at_fork(after_in_child=_after_fork)


class Metrics:
    """One process's instruments and its cached store snapshot. Thread-safe."""

    def __init__(self, snapshot: Callable[[], Snapshot]) -> None:
        self._take = snapshot
        self._lock = threading.Lock()
        self._cached: tuple[float, Snapshot] | None = None
        self._made: dict[str, Any] | None = None
        _LIVE.add(self)

    # --- instruments (made once per process: a fork forgets them, see _after_fork) ---------
    def _forget(self) -> None:
        self._lock = threading.Lock()  # another thread of the parent may have held it
        self._made = None

    def _instruments(self) -> dict[str, Any]:
        made = self._made
        if made is not None:
            return made
        with self._lock:
            if self._made is None:
                self._made = self._make()
            return self._made

    def _make(self) -> dict[str, Any]:
        from prometheus_client import CollectorRegistry, Counter, Histogram, values

        multiprocess = _multiproc_dir_usable()
        if multiprocess and values.ValueClass is values.MutexValue:
            # prometheus_client picks its value class when first imported; it was imported
            # before the directory was set (mod_wsgi's SetEnv, an embedding program).
            values.ValueClass = values.MultiProcessValue()
        elif not multiprocess and values.ValueClass is not values.MutexValue:
            values.ValueClass = values.MutexValue  # it picked the directory we cannot use
        own = CollectorRegistry(auto_describe=True)
        # In multiprocess mode the values go to files and the scrape reads them all back
        # (MultiProcessCollector); registering them here too would count this process twice.
        where = None if multiprocess else own
        return {
            "multiprocess": multiprocess,
            "registry": own,
            "request_children": {},  # (route, method, status) -> its counter: labels() once
            "requests": Counter(
                "splitca_http_requests",
                "HTTP requests answered, by route, method and status code.",
                ["route", "method", "status"],
                registry=where,
            ),
            "store_errors": Counter(
                "splitca_store_errors",
                "Requests that failed because the store could not serve (HTTP 503).",
                registry=where,
            ),
            "ping": Histogram(
                "splitca_store_ping_seconds",
                "How long the store took to answer a health ping.",
                buckets=_PING_BUCKETS,
                registry=where,
            ),
        }

    # --- what the app reports -------------------------------------------------------------
    def observe_request(
        self, route: str, method: str, status: int, error: BaseException | None
    ) -> None:
        m = self._made or self._instruments()  # one attribute read once they are made
        shown = method if method in _METHODS else "other"  # a client's method is not a label
        key = (route, shown, status)
        child = m["request_children"].get(key)
        if child is None:  # labels() validates and locks on every call: once per key
            child = m["request_children"][key] = m["requests"].labels(route, shown, str(status))
        child.inc()
        if isinstance(error, StoreError):
            m["store_errors"].inc()

    def observe_ping(self, seconds: float) -> None:
        """Never raises: a health check is answered whatever happens to the metrics."""
        try:
            self._instruments()["ping"].observe(seconds)
        except Exception as exc:
            log.warning("metrics: could not record a store ping: %s", exc)

    # --- a scrape ---------------------------------------------------------------------------
    def snapshot(self) -> Snapshot:
        """The store's numbers, taken at most every ``SNAPSHOT_TTL`` seconds per process."""
        now = time.monotonic()
        with self._lock:
            cached = self._cached
            if cached is not None and now - cached[0] < SNAPSHOT_TTL:
                return cached[1]
        taken = self._take()
        self.observe_ping(taken.health.store_seconds)
        with self._lock:
            self._cached = (time.monotonic(), taken)
        return taken

    def render(self) -> tuple[bytes, str]:
        """The exposition text and its Content-Type."""
        from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        m = self._instruments()
        snap = self.snapshot()
        if m["multiprocess"]:
            registry = CollectorRegistry()
            MultiProcessCollector(registry)
        else:
            registry = m["registry"]
        data = generate_latest(registry) + generate_latest(_SnapshotCollector(snap))
        return data, CONTENT_TYPE_LATEST


def _multiproc_dir_usable() -> bool:
    """Whether ``PROMETHEUS_MULTIPROC_DIR`` is set and a directory this process can write
    (made, 0700, if missing: /run is emptied at boot). If it is set but unusable, this
    process counts its own requests (logged once): metrics never cost a request its answer."""
    where = os.environ.get(MULTIPROC_ENV)
    if not where:
        return False
    try:
        os.makedirs(where, mode=0o700, exist_ok=True)
        if os.access(where, os.W_OK | os.X_OK):
            return True
        problem = "not writable"
    except OSError as exc:
        problem = exc.strerror or str(exc)
    log.warning(
        "%s=%s is not a usable directory (%s); this process counts its own requests only",
        MULTIPROC_ENV,
        where,
        problem,
    )
    return False


class _SnapshotCollector:
    """A prometheus_client collector over one snapshot (gauges, the same from every worker)."""

    def __init__(self, snap: Snapshot) -> None:
        self.snap = snap

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeMetricFamily

        s = self.snap
        now = time.time()

        def gauge(name: str, doc: str, value: float | None) -> Iterator[Any]:
            if value is not None:
                yield GaugeMetricFamily(name, doc, value=value)

        yield from gauge(
            "splitca_up", "1 if the CA can serve (store and key), else 0.", float(s.health.ok)
        )
        yield from gauge(
            "splitca_snapshot_timestamp_seconds", "When these store numbers were read.", s.at
        )
        counts = s.counts or {}
        yield from gauge(
            "splitca_csr_pending",
            "Certificate requests waiting to be signed.",
            counts.get("requested"),
        )
        yield from gauge(
            "splitca_certificates_signed",
            "Current certificates, not revoked.",
            counts.get("signed"),
        )
        yield from gauge(
            "splitca_certificates_revoked",
            "Current certificates that are revoked.",
            counts.get("revoked"),
        )
        yield from gauge("splitca_crl_number", "Number of the CRL in effect.", s.crl_number)
        if s.crl_this_update is not None:
            yield from gauge(
                "splitca_crl_age_seconds",
                "Seconds since the CRL in effect was made (thisUpdate).",
                now - s.crl_this_update,
            )
        if s.crl_next_update is not None:
            yield from gauge(
                "splitca_crl_next_update_seconds",
                "Seconds until the CRL's nextUpdate (negative: expired).",
                s.crl_next_update - now,
            )
        if s.ca_not_after is not None:
            yield from gauge(
                "splitca_ca_cert_expiry_seconds",
                "Seconds until the signing CA certificate expires.",
                s.ca_not_after - now,
            )
        if s.masters:
            families = {
                "behind": GaugeMetricFamily(
                    "splitca_master_crl_behind",
                    "CRL numbers a compile master lacks (0: current).",
                    labels=["certname"],
                ),
                "lag": GaugeMetricFamily(
                    "splitca_master_crl_lag_seconds",
                    "Seconds a compile master has lacked the current CRL.",
                    labels=["certname"],
                ),
                "age": GaugeMetricFamily(
                    "splitca_master_crl_fetch_age_seconds",
                    "Seconds since a compile master last fetched the CRL.",
                    labels=["certname"],
                ),
                "number": GaugeMetricFamily(
                    "splitca_master_crl_number",
                    "CRL number a compile master was last served.",
                    labels=["certname"],
                ),
            }
            for ms in s.masters:
                families["behind"].add_metric([ms.name], ms.behind)
                families["lag"].add_metric([ms.name], ms.lag)
                families["age"].add_metric([ms.name], max(0.0, now - ms.fetched_at))
                families["number"].add_metric([ms.name], ms.crl_number)
            yield from families.values()
