"""The intake service: settings, authentication, routing, journal, outbox and metrics in one object.

Side effects live at the edges: `create_run` (Prefect), `append_event` (evidence store) and
`confirm_subscription` (an HTTPS GET to SNS). They are parameters so another run launcher
can be put in without touching the request path.
"""

from __future__ import annotations

import gc
import ipaddress
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from irp.errors import ConfigurationError, PlaybookError
from irp.intake.approvals import PrefectRuns
from irp.intake.auth import Authenticator
from irp.intake.backlog import BacklogMonitor
from irp.intake.journal import AlertJournal, open_journal
from irp.intake.metrics import Metrics
from irp.intake.outbox import Outbox, ServerBusy
from irp.intake.routing import Router
from irp.intake.sns import SnsVerifier
from irp.models import TimelineEntry
from irp.prefect_ui import flow_run_url, ui_base
from irp.settings import Settings

__all__ = ["ByteBudget", "IntakeService", "RunLauncher", "append_event", "confirm_subscription", "is_loopback",
           "routing_path"]

log = logging.getLogger("irp.intake")
_PURGE_EVERY = 600.0


def routing_path(settings: Settings) -> Path:
    return settings.routing_file or settings.playbooks_dir / "routing.yaml"


class RunLauncher:
    """Creates incident runs from their deployment, as `run_deployment(..., timeout=0)` does, on one
    long-lived Prefect client (connections kept alive). A deployment's id is looked up by name once,
    not before every run, and again when the server no longer knows it (deleted, or applied anew)."""

    def __init__(self) -> None:
        import asyncio

        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="irp-prefect-client", daemon=True)
        self._thread.start()
        self._client = None
        self._deployment_ids: dict[str, object] = {}  # "<flow>/<deployment>" → its id

    async def _create(self, payload: dict) -> str:
        import httpx

        name = payload["deployment"]
        try:
            return await self._create_from(await self._deployment_id(name), payload)
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code != 404:
                raise
        self._deployment_ids.pop(name, None)  # the id is gone (deleted, or applied anew): look the name up again
        return await self._create_from(await self._deployment_id(name), payload)

    async def _connected(self):
        if self._client is None:
            from prefect.client.orchestration import get_client

            client = get_client(httpx_settings={"timeout": 30})
            await client.__aenter__()
            self._client = client
        return self._client

    async def _deployment_id(self, name: str):
        found = self._deployment_ids.get(name)
        if found is None:
            deployment = await (await self._connected()).read_deployment_by_name(name)
            found = self._deployment_ids[name] = deployment.id
        return found

    async def _create_from(self, deployment_id, payload: dict) -> str:
        """One attempt, on the Prefect client's connection but without its retries: a 503 (Prefect on SQLite:
        "database is locked" while another connection writes) is raised at once as ServerBusy, which the
        outbox asks again within milliseconds, where the client would wait 2, 4, 8… s."""
        import httpx
        from prefect.client.schemas.actions import DeploymentFlowRunCreate
        from prefect.states import Scheduled, to_state_create

        body = DeploymentFlowRunCreate(
            parameters=payload["parameters"], state=to_state_create(Scheduled()), tags=list(payload.get("tags") or []),
            name=payload.get("flow_run_name"), idempotency_key=payload["idempotency_key"],
            # the parameters are built here from a validated alert, and the flow validates them again when it
            # starts; the server's check re-validates the deployment's JSON Schema itself on every call (a
            # sixth of its CPU in a burst)
            enforce_parameter_schema=False,
        ).model_dump(mode="json", exclude_unset=True)
        http = (await self._connected())._client  # its send() is the retrying one: use httpx's own
        request = http.build_request("POST", f"/deployments/{deployment_id}/create_flow_run", json=body)
        if http.enable_csrf_support:
            await http._add_csrf_headers(request=request)
        response = await httpx.AsyncClient.send(http, request)
        if response.status_code == 503:
            raise ServerBusy(f"the Prefect server is busy ({response.text[:200]})")
        response.raise_for_status()
        return str(response.json()["id"])

    def __call__(self, payload: dict) -> str:
        """The flow run id of the incident's run, created now or by an earlier attempt with the same key."""
        import asyncio

        return asyncio.run_coroutine_threadsafe(self._create(payload), self._loop).result(timeout=120)

    def close(self) -> None:
        import asyncio

        async def close() -> None:
            if self._client is not None:
                await self._client.__aexit__(None, None, None)

        try:
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(timeout=10)
        except Exception:  # closing is best effort at shutdown
            log.debug("closing the Prefect client failed", exc_info=True)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)


def append_event(incident_id: str, entry: TimelineEntry) -> None:
    """Append a timeline entry to the incident in the configured evidence store."""
    from irp.evidence import open_store
    from irp.settings import get_settings

    open_store(get_settings().evidence_url).append_event(incident_id, entry)


def confirm_subscription(url: str, ca_bundle: Path | None = None) -> None:
    """Visit an SNS SubscribeURL (already checked against the allowed hosts)."""
    import httpx

    response = httpx.get(url, timeout=10.0, verify=str(ca_bundle) if ca_bundle else True, follow_redirects=False)
    response.raise_for_status()


class ByteBudget:
    """Bytes that requests may hold together; taken and given back on the event loop (no lock)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0

    def take(self, size: int) -> bool:
        if self.used + size > self.limit:
            return False
        self.used += size
        return True

    def give(self, size: int) -> None:
        self.used -= size


def is_loopback(host: str) -> bool:
    """True for localhost and loopback addresses (127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class IntakeService:
    """Everything the HTTP app needs; `start` and `stop` run the outbox worker."""

    def __init__(
        self,
        settings: Settings,
        *,
        local: bool = False,
        journal: AlertJournal | None = None,
        create_run: Callable[[dict], str] | None = None,
        append_event: Callable[[str, TimelineEntry], None] = append_event,
        runs: PrefectRuns | None = None,
    ) -> None:
        self.settings = settings
        self.local = local
        self.auth = Authenticator(settings, local=local)
        self.unverified = ByteBudget(settings.webhook_max_unverified_bytes)  # bodies read before their check
        self.routing_file = routing_path(settings)
        self._routing_stat = _stat(self.routing_file)
        self.router = Router.from_file(self.routing_file, settings.triage_severities)
        self.routing_loaded_at = time.time()
        self.routing_problems: list[str] = []  # of the file on disk, when it is not the one in force
        self._reload_now = threading.Event()
        self._reload_forced = False
        self.sns = SnsVerifier(self.auth.sns_topics, settings.sns_host_pattern, settings.sns_ca_bundle)
        self.metrics = Metrics()
        self.metrics.routing_result(True, self.routing_loaded_at)
        self.journal = journal or open_journal(settings.intake_journal, settings.dedup_window_seconds,
                                               settings.intake_lease_seconds)
        self._launcher = None
        if create_run is None:
            create_run = self._launcher = RunLauncher()
        self.outbox = Outbox(
            self.journal,
            create_run=create_run,
            append_event=append_event,
            confirm=lambda url: confirm_subscription(url, settings.sns_ca_bundle),
            retry_max=settings.intake_retry_max_seconds,
            on_run=self.metrics.run_result,
            on_busy=self.metrics.run_busy.inc,
        )
        self.journal.on_commit = self.outbox.wake
        self.ui_url = ui_base()
        prefect_runs = runs is not None or self._launcher is not None  # runs created on the Prefect server
        self.runs = runs or PrefectRuns()  # the paused runs approval links resume (irp/intake/approvals.py)
        self.backlog = BacklogMonitor(self.journal, self.runs.waiting if prefect_runs else lambda: None)
        self._stop = threading.Event()
        self._purger = threading.Thread(target=self._purge_loop, name="irp-journal-purge", daemon=True)
        self._watcher = threading.Thread(target=self._watch_routing, name="irp-routing-watch", daemon=True)

    def check_startup(self, host: str) -> None:
        """Refuse to serve without any credential unless local, and local only on loopback."""
        if self.local and not is_loopback(host):
            raise ConfigurationError(
                f"--local serves sources without credentials: bind it to 127.0.0.1, not {host}")
        if not self.auth.any_configured and not self.local:
            raise ConfigurationError(
                "no credential configured: set IRP_WEBHOOK_TOKEN and/or IRP_WEBHOOK_SECRET "
                "(and IRP_PAGERDUTY_SECRET, IRP_SNS_TOPIC_ARNS for those sources), "
                "or pass --local for local use without authentication")
        if not os.environ.get("PREFECT_API_URL") and not _prefect_api_url():
            raise ConfigurationError(
                "PREFECT_API_URL is not set: the intake creates runs on a Prefect server; start one "
                "(prefect server start) and set PREFECT_API_URL=http://127.0.0.1:4200/api")
        for source in self.auth.unusable_sources():
            if not self.local:
                log.warning("source %s has no credential configured (methods %s): it will answer 401",
                            source, ", ".join(self.auth.methods[source]))

    def start(self) -> None:
        # Prefect's modules make a large, long-lived heap: import them now and move everything
        # allocated so far out of the collector's reach, so full collections do not pause acks.
        import prefect.deployments  # noqa: F401

        gc.collect()
        gc.freeze()
        self.outbox.start()
        self._purger.start()
        self._watcher.start()

    def stop(self) -> None:
        self._stop.set()
        self._reload_now.set()
        self.outbox.stop()
        if self._launcher is not None:
            self._launcher.close()
        self.journal.close()

    def _purge_loop(self) -> None:
        while not self._stop.wait(_PURGE_EVERY):
            now = time.time()
            try:
                self.close_ended_groups(now - self.settings.dedup_window_seconds)
                self.journal.purge(now - self.settings.intake_retention_days * 86400,
                                   now - self.settings.dedup_window_seconds)
            except Exception:
                log.exception("journal purge failed")

    def close_ended_groups(self, window_start: float) -> int:
        """Groups past the dedup window whose incident has ended stop taking alerts; returns how many.

        An open incident's group keeps joining its alerts, however long its response takes.
        """
        from irp.evidence import open_store

        quiet = self.journal.quiet_open_groups(window_start)
        if not quiet:
            return 0
        store = open_store(self.settings.evidence_url)
        known = set(store.incident_ids())
        ended = []
        for key, incident_id in quiet:
            try:
                if incident_id not in known or store.load_incident(incident_id).status.ended:
                    ended.append((key, incident_id))
            except Exception as exc:  # noqa: BLE001 (unreadable: left open, tried at the next sweep)
                log.warning("incident %s: status not read (%s); its alerts keep joining it", incident_id, exc)
        if ended:
            self.journal.mark_ended(ended).result(timeout=60)
        return len(ended)

    def request_routing_reload(self) -> None:
        """Read the routing file again now, changed or not (SIGHUP; safe in a signal handler)."""
        self._reload_forced = True
        self._reload_now.set()

    def reload_routing(self, force: bool = False) -> bool:
        """Put the routing file in force if it changed; True when other routes are now in force.

        A file with problems is not taken: the routes in force stay, and its problems are logged once
        and shown by /healthz until the file is fixed. Groups already open keep their incident.
        """
        state = _stat(self.routing_file)
        if state == self._routing_stat and not force:
            return False
        self._routing_stat = state
        try:
            router = Router.from_file(self.routing_file, self.settings.triage_severities)
        except PlaybookError as exc:
            problems = [str(problem) for problem in exc.problems]
            if problems != self.routing_problems:
                log.warning("routing file %s not loaded; the routes loaded %s stay in force:\n  %s",
                            self.routing_file, _when(self.routing_loaded_at), "\n  ".join(problems))
            self.routing_problems = problems
            self.metrics.routing_result(False, self.routing_loaded_at)
            return False
        fixed, self.routing_problems = bool(self.routing_problems), []
        if router.sha256 == self.router.sha256:  # touched, or put back as it was
            if fixed:
                log.info("routing file %s is valid again: the routes in force are unchanged", self.routing_file)
            self.metrics.routing_result(True, self.routing_loaded_at)
            return False
        self.router, self.routing_loaded_at = router, time.time()
        self.metrics.routing_result(True, self.routing_loaded_at)
        log.info("routing file %s reloaded: %s routes%s (sha256 %s)", self.routing_file, len(router.routing.routes),
                 " and a default" if router.routing.default else "", router.sha256[:12])
        return True

    def _watch_routing(self) -> None:
        interval = self.settings.routing_reload_seconds or None  # 0: on SIGHUP only
        while not self._stop.is_set():
            self._reload_now.wait(interval)
            self._reload_now.clear()
            if self._stop.is_set():
                break
            force, self._reload_forced = self._reload_forced, False
            try:
                self.reload_routing(force)
            except Exception:  # a bug here must not stop the watch
                log.exception("routing reload failed")

    def run_url(self, flow_run_id: str | None) -> str | None:
        return flow_run_url(flow_run_id, self.ui_url) if flow_run_id and self.ui_url else None


def _stat(path: Path) -> tuple[int, int, int] | None:
    """What tells a changed file cheaply: modification time, size, inode (an editor may replace it)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size, stat.st_ino


def _when(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


def _prefect_api_url() -> str | None:
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value()
