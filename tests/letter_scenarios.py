"""Realistic incidents for the letters: one per incident type, with a fixed clock and fixed ids.

Each scenario is a story: steps that completed, were skipped or failed (as the engine's timeline records
them), measures people closed (or not yet), the review's outcome, the notifications already sent. `state(at)`
is the incident as its record stands at a time, so a letter rendered `at` sees only what happened before.
`letters()` lists what each scenario sends: every obligation it owes in its phase, the complementary
notification to the CNIL and the final letter to the Client.

Import from a test: `from letter_scenarios import SCENARIOS, render_letter`.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from irp.models import (
    ActionItem,
    Alert,
    Incident,
    IncidentType,
    NotificationRecord,
    PersonalData,
    ReviewOutcome,
    Severity,
    Stage,
    TimelineEntry,
)
from irp.notifications.facts import letter_facts
from irp.notifications.letters import CONTACTS, Rendered, render
from irp.notifications.obligations import decide

AWARE = datetime(2026, 11, 20, 9, 30, tzinfo=UTC)
PHASE_AT = {"initial": AWARE + timedelta(hours=3), "complementary": AWARE + timedelta(days=2),
            "final": AWARE + timedelta(days=12)}
PHASE_NAME = {"initial": "initial", "complementary": "update", "final": "final"}
REVIEW_AT = AWARE + timedelta(days=10)


@dataclass
class Scenario:
    """One incident's story; offsets are from awareness."""

    type: IncidentType
    severity: Severity
    clients: list[str]
    systems: list[str]
    data: PersonalData
    # (step id, action, stage, status, offset, reason) as the engine records them
    steps: list[tuple[str, str, str, str, timedelta, str]] = field(default_factory=list)
    # (step id, stage, title, closed after, takeover) measures assigned to people
    measures: list[tuple[str, str, str, timedelta | None]] = field(default_factory=list)
    causes: str = ""
    corrective: list[tuple[str, str]] = field(default_factory=list)  # (step id or "", title)
    significant: bool = False
    role: str = "controller"
    for_client: bool = False  # processor instructed to notify and inform on the Client's behalf
    alert_title: str = "Alert title from the source"
    alert_description: str = "Free text of the alert, written by a machine."
    started: timedelta | None = None

    @property
    def id(self) -> str:
        return "INC-20261120-" + hashlib.sha256(self.type.value.encode()).hexdigest()[:6].upper()

    def base(self) -> Incident:
        timeline = [TimelineEntry(at=AWARE - timedelta(minutes=5), kind="obligation", message="obligations assessed",
                                  data={"gdpr_role": self.role, "notify_for_client": self.for_client})]
        if self.started is not None:
            timeline.append(TimelineEntry(at=AWARE + timedelta(hours=1), kind="letter_fact", actor="Alice Durand",
                                          message="breach_started_at stated",
                                          data={"field": "breach_started_at", "value": (AWARE - self.started).isoformat()}))
        for sid, action, stage, status, offset, reason in self.steps:
            text = {"completed": "completed", "skipped": f"skipped: {reason}", "failed": f"failed (escalate): {reason}"}
            timeline.append(TimelineEntry(at=AWARE + offset, kind="step", stage=Stage(stage), step=sid,
                                          message=f"step {sid} ({action}) {text[status]}"))
        actions = []
        for n, (sid, stage, title, closed) in enumerate(self.measures):
            prefix = "T" if sid.startswith("!") else "A"
            step = sid.lstrip("!")
            actions.append(ActionItem(id=f"{prefix}-{n:02d}{self.id[-4:]}", title=title, owner="security@confluent-digital.com",
                                      stage=Stage(stage), step=step, due_at=AWARE + timedelta(hours=4),
                                      status="closed" if closed is not None else "open",
                                      closed_at=AWARE + closed if closed is not None else None,
                                      closed_by="Alice Durand" if closed is not None else ""))
        incident = Incident(
            id=self.id, type=self.type, severity=self.severity, title=self.alert_title, summary=self.alert_description,
            severity_reason="", detected_at=AWARE - timedelta(minutes=16), aware_at=AWARE,
            affected_clients=self.clients, affected_systems=self.systems, personal_data=self.data,
            actions=actions, timeline=timeline)
        obligations, _ = decide(incident, controller=self.role == "controller", for_client=self.for_client,
                                risk=self.data.involved,
                                high_risk=self.data.high_risk, significant=self.significant, client_notice_hours=24)
        return incident.model_copy(update={"obligations": obligations})

    def state(self, at: datetime, sent: list[NotificationRecord] | None = None) -> Incident:
        """The record as it stands at `at`: only what happened before."""
        incident = self.base()
        actions = [a if a.closed_at is None or a.closed_at <= at else a.model_copy(
            update={"status": "open", "closed_at": None, "closed_by": ""}) for a in incident.actions]
        review = None
        if self.causes and REVIEW_AT <= at:
            review = ReviewOutcome(by="Claire Petit (DPO)", at=REVIEW_AT, causes=self.causes)
            actions += [ActionItem(id=f"C-{n:02d}{self.id[-4:]}", title=title, owner="security@confluent-digital.com",
                                   stage=Stage.review, step=sid, due_at=datetime(2027, 1, 29, 17, tzinfo=UTC))
                        for n, (sid, title) in enumerate(self.corrective)]
        return incident.model_copy(update={
            "timeline": [e for e in incident.timeline if e.at <= at], "actions": actions, "review": review,
            "notifications": [n for n in (sent or []) if n.at < at]})


def _record(n: int, obligation: Any, at: datetime, phase: str) -> NotificationRecord:
    return NotificationRecord(id=f"N-{at:%Y%m%d%H%M%S}-{n:02d}0000", at=at, phase=phase, audience=obligation.audience,
                              recipient=obligation.recipient, template=obligation.template, subject="…",
                              obligation=obligation.id, status="sent")


def letters(scenario: Scenario) -> list[tuple[str, str, str, Any]]:
    """(template, phase, recipient key, obligation or None) of each letter the scenario sends, in order."""
    owed = scenario.base().obligations
    out = [(o.template, "final" if o.phase == "final" else "initial", o.recipient, o) for o in owed]
    if any(o.kind == "gdpr_authority" for o in owed):
        out.append(("authority_notification", "complementary", "cnil", next(o for o in owed if o.kind == "gdpr_authority")))
    for o in owed:
        if o.kind == "client":
            out.append(("client_notification", "final", o.recipient, o))
    told = {o.recipient for o in owed if o.audience == "client"}
    for client in scenario.clients:  # no obligation: the playbook's own notice to the Client
        if client not in told:
            out += [("client_service_notice", "initial", client, None), ("client_service_notice", "final", client, None)]
    return out


def sent_at(scenario: Scenario, n: int) -> datetime:
    """When the scenario's n-th letter leaves: its phase's time, one minute after the letter before it."""
    return PHASE_AT[letters(scenario)[n][1]] + timedelta(minutes=n)


def sent_before(scenario: Scenario) -> list[NotificationRecord]:
    """The notifications of the scenario's letters, as the record keeps them once sent."""
    return [_record(n, obligation, sent_at(scenario, n), PHASE_NAME[phase])
            for n, (_, phase, _, obligation) in enumerate(letters(scenario)) if obligation is not None]


def render_letter(scenario: Scenario, n: int, language: str, folder: Path, incident: Incident | None = None) -> Rendered:
    """Render the scenario's n-th letter as dispatch does, at the time it leaves (of `incident`, when given)."""
    template, phase, recipient, obligation = letters(scenario)[n]
    at = sent_at(scenario, n)
    incident = incident or scenario.state(at, sent_before(scenario))
    alert = Alert(title=scenario.alert_title, description=scenario.alert_description, observed_at=incident.detected_at,
                  labels={"tenant": ",".join(scenario.clients)})
    audience = obligation.audience if obligation is not None else "client"
    context = {
        "incident": incident.model_dump(mode="json"), "alert": alert.model_dump(mode="json"), "steps": {},
        "playbook": {"name": scenario.type.value, "version": "1.0.0", "incident_type": scenario.type.value},
        "stage": "notify", "phase": PHASE_NAME[phase], "dry_run": False, "recipient": recipient,
        "obligation": obligation.model_dump(mode="json") if obligation is not None else None,
        "notification": {"phase": PHASE_NAME[phase], "late": False, "late_reason": "",
                         "due_at": obligation.due_at.isoformat() if obligation is not None else None,
                         "sent_at": at.isoformat()},
        "contacts": CONTACTS,
        "facts": letter_facts(incident, language=language, phase=PHASE_NAME[phase], audience=audience,
                              recipient=recipient, default_role=scenario.role, now=at),
    }
    return render(folder, template, language, context)


H, M, D = (lambda n: timedelta(hours=n)), (lambda n: timedelta(minutes=n)), (lambda n: timedelta(days=n))
NOT_CONFIGURED = "not configured: IRP_PLATFORM_API_URL is not set"

SCENARIOS: dict[str, Scenario] = {s.type.value: s for s in [
    Scenario(
        IncidentType.account_compromise, Severity.critical, ["hexa-telecom"], ["web-app"],
        PersonalData(involved=True, categories=["identification", "performance_ratings"], approx_people=85,
                     approx_records=85),
        alert_title="Supervisor account used from an unusual country",
        alert_description="Login anomaly: supervisor account m.dupont@hexa-telecom.fr logged in from 185.220.101.34.",
        steps=[("logout_user", "platform.logout_user", "contain", "completed", M(12), ""),
               ("reset_password", "platform.reset_password", "contain", "completed", M(13), ""),
               ("block_src", "aws.block_ip", "contain", "completed", M(14), ""),
               ("suspend_client", "platform.suspend_account", "contain", "skipped",
                M(45), "approval of step suspend_client rejected by Bob Martin: the Client's administrator is reachable")],
        measures=[("revoke_sessions", "contain", "Revoke the API tokens", H(2)),
                  ("decide_suspension", "contain", "Decide with the Client", H(5)),
                  ("associate_client", "contain", "Ask the Client's administrator", D(1)),
                  ("undo_changes", "restore", "Review the actions", D(3)),
                  ("return_account", "restore", "Return the account", D(4))],
        causes="Le compte du superviseur n'était pas protégé par l'authentification multifacteur ; son mot de passe, "
               "réutilisé sur un site tiers, avait été divulgué lors d'une fuite de ce site.",
        corrective=[("corrective", "Enforce MFA")], significant=True, started=M(55)),
    Scenario(
        IncidentType.data_leak, Severity.critical, ["acme-callcenter"], ["recordings-store"],
        PersonalData(involved=True, categories=["call_recordings", "identification"], approx_people=12000,
                     approx_records=48000, high_risk=True),
        alert_title="Export of call recordings to an unknown host",
        alert_description="DLP: 4.2 GB of call recordings for tenant acme-callcenter sent to 203.0.113.50.",
        steps=[("deactivate_key", "aws.deactivate_access_key", "contain", "completed", M(9), ""),
               ("revoke_tokens", "platform.revoke_api_tokens", "contain", "skipped", M(9), NOT_CONFIGURED),
               ("block_public", "aws.block_public_access", "contain", "completed", M(10), ""),
               ("pause_feature", "platform.set_maintenance", "contain", "failed", M(11), "503 Service Unavailable")],
        measures=[("!revoke_tokens", "contain", "Do by hand what step revoke_tokens could not", H(2)),
                  ("!pause_feature", "contain", "Do by hand what step pause_feature could not", H(3)),
                  ("cut_access", "contain", "Revoke the credentials", H(1)),
                  ("block_egress", "contain", "Block the destination", None),
                  ("fix_and_reopen", "restore", "Fix the access path", D(5))],
        causes="Une clé d'accès du service d'export, inscrite par erreur dans un journal d'intégration continue "
               "accessible à un prestataire, a été utilisée pour copier les enregistrements.",
        corrective=[("corrective", "Egress control"), ("", "Analyser les journaux d'intégration continue à la "
                                                          "recherche de secrets avant chaque publication")],
        significant=True, started=H(7)),
    Scenario(
        IncidentType.unauthorized_access, Severity.major, ["globex"], ["reporting-api"],
        PersonalData(involved=True, categories=["call_transcripts", "contact"], approx_people=1450,
                     approx_records=3200),
        steps=[("logout_user", "platform.logout_user", "contain", "completed", M(20), ""),
               ("revoke_tokens", "platform.revoke_api_tokens", "contain", "completed", M(21), ""),
               ("pause_feature", "platform.set_maintenance", "contain", "completed", M(22), "")],
        measures=[("revoke_access", "contain", "Disable the account", H(1)),
                  ("close_path", "contain", "Close the access path", D(1)),
                  ("fix_authorization", "restore", "Fix the authorization check", D(4))],
        causes="Un contrôle d'autorisation manquait sur un point d'accès de l'API de rapports, qui renvoyait des "
               "transcriptions d'un autre Client.",
        corrective=[("corrective", "Authorization tests")]),
    Scenario(
        IncidentType.intrusion_attempt, Severity.major, ["initech"], ["web-app"],
        PersonalData(involved=True, categories=["contact", "technical_identifiers"], approx_people=310,
                     approx_records=310),
        steps=[("block_src", "aws.block_ip", "contain", "completed", M(7), "")],
        measures=[("protect_targeted_accounts", "contain", "Check the targeted accounts", H(6)),
                  ("patch_target", "restore", "Patch", D(2)), ("tune_protection", "restore", "Tune", None)],
        causes="Une injection SQL sur le formulaire de recherche de contacts, non filtrée par le pare-feu "
               "applicatif, a permis de lire la table des contacts.",
        corrective=[("corrective", "Check detection")]),
    Scenario(
        IncidentType.malware, Severity.critical, ["acme-callcenter"], ["import-worker-3"],
        PersonalData(involved=True, categories=["call_recordings"], approx_people=2300, approx_records=5100),
        steps=[("snapshot_host", "aws.snapshot_volumes", "contain", "completed", M(15), ""),
               ("quarantine_host", "aws.quarantine_instance", "contain", "completed", M(16), ""),
               ("rotate_host_secret", "aws.rotate_secret", "contain", "failed", M(17), "AccessDenied"),
               ("block_c2", "aws.block_ip", "contain", "completed", M(18), "")],
        measures=[("!rotate_host_secret", "contain", "Do by hand", H(2)),
                  ("block_indicators", "contain", "Block the indicators", H(8)),
                  ("rebuild_host", "restore", "Rebuild", D(2)), ("rescan_imports", "restore", "Rescan", None)],
        causes="Un fichier d'import piégé, déposé par un compte Client compromis, a été ouvert par un traitement "
               "d'import qui ne l'analysait pas au préalable.",
        corrective=[("corrective", "Scan uploads")], significant=True),
    Scenario(
        IncidentType.data_alteration, Severity.major, ["globex"], ["ratings-db"],
        PersonalData(involved=True, categories=["performance_ratings"], approx_people=640, approx_records=15200),
        steps=[("revoke_writer_tokens", "platform.revoke_api_tokens", "contain", "completed", M(25), ""),
               ("freeze_tenant", "platform.set_maintenance", "contain", "completed", M(26), "")],
        measures=[("snapshot_altered", "contain", "Snapshot", H(2)), ("restore_data", "restore", "Restore", D(1)),
                  ("recompute_derived", "restore", "Recompute", D(2))],
        causes="Un jeton d'API à portée trop large, utilisé par un script d'intégration du Client, a réécrit "
               "les évaluations d'une campagne.",
        corrective=[("corrective", "Scoped tokens"), ("restore_test", "Test restore")]),
    Scenario(
        IncidentType.human_error, Severity.minor, ["initech"], ["exports"],
        PersonalData(involved=True, categories=["identification", "call_recordings"], approx_people=42,
                     approx_records=42),
        measures=[("undo_mistake", "contain", "Undo", H(1)), ("request_deletion", "contain", "Ask deletion", D(1)),
                  ("restore_state", "restore", "Check", None)],
        causes="Un export destiné au Client a été envoyé à une adresse mal saisie, sans contrôle par un second "
               "opérateur.",
        corrective=[("corrective", "Registered addresses"), ("procedure", "Update procedure")]),
    Scenario(
        IncidentType.cyberattack, Severity.critical, ["acme-callcenter", "globex"], ["web-app", "api-gateway"],
        PersonalData(involved=True, categories=["identification", "credentials"], approx_people=5200,
                     approx_records=5200, high_risk=True),
        steps=[("revoke_admin_sessions", "aws.revoke_role_sessions", "contain", "completed", M(30), ""),
               ("rotate_admin_secret", "aws.rotate_secret", "contain", "completed", M(31), ""),
               ("pause_exports", "platform.set_maintenance", "contain", "skipped", M(31), NOT_CONFIGURED),
               ("reopen_exports", "actions.undo_step", "restore", "completed", D(3), "")],
        measures=[("!pause_exports", "contain", "Do by hand", H(1)), ("absorb_ddos", "contain", "Edge", H(4)),
                  ("restrict_admin", "contain", "Restrict admin", D(1)), ("patch_weakness", "restore", "Patch", D(2)),
                  ("restore_services", "restore", "Restore", D(3))],
        causes="Une vulnérabilité non corrigée de la passerelle d'API a permis à l'attaquant d'obtenir un jeton "
               "d'administration et de lire la table des comptes utilisateurs.",
        corrective=[("corrective", "Exercise")], significant=True, started=D(1)),
    Scenario(
        IncidentType.service_unavailability, Severity.critical, ["acme-callcenter", "globex"], ["call-ingestion"],
        PersonalData(),
        steps=[("pause_batch_exports", "platform.set_maintenance", "contain", "completed", M(5), ""),
               ("publish_status", "http.request", "contain", "completed", M(6), "")],
        measures=[("fail_over", "contain", "Fail over", H(1)), ("status_page", "contain", "Status page", H(3)),
                  ("restore_service", "restore", "Restore", H(4)), ("replay_queued", "restore", "Replay", H(9))],
        causes="La saturation de la file de réception des appels, après une mise à jour de configuration, a "
               "interrompu l'ingestion pendant 2 h 40.",
        corrective=[("corrective", "SPOF")], significant=True),
    Scenario(
        IncidentType.technical_failure, Severity.major, ["globex"], ["transcription"],
        PersonalData(),
        steps=[("pause_feature", "platform.set_maintenance", "contain", "completed", M(12), "")],
        measures=[("isolate_component", "contain", "Isolate", H(1)), ("repair_component", "restore", "Repair", D(1)),
                  ("reprocess_backlog", "restore", "Reprocess", None)],
        causes="Le prestataire de transcription a subi une panne de stockage ; notre service n'avait pas de "
               "solution de repli.",
        corrective=[("corrective", "Fallback")], significant=False),
]}
