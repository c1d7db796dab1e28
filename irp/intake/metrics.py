"""Prometheus metrics of the intake, served at GET /metrics (one registry per service)."""

from __future__ import annotations

from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics, generate_latest

from irp.intake.backlog import Backlog

__all__ = ["Metrics"]

REJECT_REASONS = (
    "unauthenticated", "replay", "too_large", "invalid_json", "invalid_payload", "unknown_source",
    "client_disconnected",
)


class Metrics:
    """Counters of accepted, rejected, deduplicated and unrouted alerts, runs, backlog and ack latency."""

    def __init__(self) -> None:
        disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.accepted = Counter("irp_intake_alerts_accepted", "Alerts durably recorded.", ["source"], registry=r)
        self.rejected = Counter("irp_intake_requests_rejected", "Requests refused, by reason.",
                                ["source", "reason"], registry=r)
        self.deduplicated = Counter("irp_intake_alerts_deduplicated", "Alerts that joined an open incident.",
                                    ["source"], registry=r)
        self.unrouted = Counter("irp_intake_alerts_unrouted", "Alerts no route matched (recorded).",
                                ["source"], registry=r)
        self.incidents = Counter("irp_intake_incidents_opened", "Alerts that opened a new incident.",
                                 ["source", "incident_type"], registry=r)
        self.runs_created = Counter("irp_intake_runs_created", "Flow runs created from the outbox.", registry=r)
        self.run_errors = Counter("irp_intake_run_errors", "Failed attempts to create a flow run.", registry=r)
        self.run_busy = Counter("irp_intake_run_busy_retries",
                                "Run creations the Prefect server answered busy (503), asked again within 0.1 s.",
                                registry=r)
        self.backlog = Gauge("irp_intake_journal_backlog", "Outbox items not yet carried out.", ["kind"],
                             registry=r)
        self.backlog_age = Gauge("irp_intake_journal_backlog_age_seconds",
                                 "How long the oldest outbox item not yet carried out has waited (0: none).", ["kind"],
                                 registry=r)
        self.runs_waiting = Gauge("irp_intake_runs_waiting", "Runs the intake created that no worker has started yet.",
                                  registry=r)
        self.runs_waiting_age = Gauge("irp_intake_runs_waiting_age_seconds",
                                      "How long the oldest run waiting for a worker has been due (0: none).",
                                      registry=r)
        self.ack_latency = Histogram(
            "irp_intake_ack_latency_seconds", "Time from request to acknowledgement (2xx).", ["source"],
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5), registry=r)
        self.routing_ok = Gauge("irp_intake_routing_last_reload_successful",
                                "1 when the routing file on disk is the one in force, 0 when it has problems.",
                                registry=r)
        self.routing_loaded = Gauge("irp_intake_routing_last_reload_success_timestamp_seconds",
                                    "When the routes in force were loaded.", registry=r)
        for reason in REJECT_REASONS:
            self.rejected.labels(source="", reason=reason)
        self._children: dict[tuple, Any] = {}

    def child(self, metric: Counter | Gauge | Histogram, *values: str) -> Any:
        """`metric.labels(*values)`, looked up once: `labels` takes a lock and builds the key on every call.

        A child is created on first use, as with `labels`, so a series appears once it has a value.
        """
        key = (metric, values)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*values)
        return found

    def routing_result(self, ok: bool, loaded_at: float) -> None:
        self.routing_ok.set(1 if ok else 0)
        self.routing_loaded.set(loaded_at)

    def run_result(self, ok: bool) -> None:
        (self.runs_created if ok else self.run_errors).inc()

    def render(self, backlog: Backlog) -> bytes:
        for kind, count in backlog.items.items():
            self.backlog.labels(kind=kind).set(count)
            self.backlog_age.labels(kind=kind).set(backlog.ages.get(kind, 0.0))
        if backlog.runs_waiting is not None:
            self.runs_waiting.set(backlog.runs_waiting)
            self.runs_waiting_age.set(backlog.runs_waiting_age or 0.0)
        return generate_latest(self.registry)
