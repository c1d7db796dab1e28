"""A severity word the vocabulary does not know is flagged on the new incident's timeline, never refused."""

from __future__ import annotations

from pathlib import Path

from irp.engine.respond import _new_incident
from irp.intake.routing import Router
from irp.models import Alert, AlertSource, IncidentType
from irp.playbook.loader import load_playbook
from irp.playbook.models import Routing

REPO = Path(__file__).resolve().parents[3]


def test_unknown_severity_word_reaches_the_timeline_and_the_playbook_decides() -> None:
    router = Router(Routing.model_validate({"version": 1, "routes": [
        {"name": "r", "incident_type": "malware", "map": {"sev": "detail.level"}, "severity_label": "sev"}]}))
    alert = Alert(source=AlertSource.eventbridge, title="t", raw={"detail": {"level": "Sev-Purple"}})
    [(routed_alert, routed, _)] = router.route_all([(alert, "firing")])
    assert routed.severity is None
    assert routed_alert.labels == {"sev": "Sev-Purple", "unclassified_severity": "Sev-Purple"}
    loaded = load_playbook(REPO / "playbooks" / "malware.yaml")
    incident = _new_incident(IncidentType.malware, routed_alert, loaded, None, routed.severity, None, None, False)
    assert incident.severity == loaded.playbook.classification.default
    [flag] = [e for e in incident.timeline if e.kind == "finding"]
    assert flag.data == {"unclassified_severity": "Sev-Purple"}
    assert flag.message.startswith("the source's severity 'Sev-Purple' is not in the vocabulary")


def test_known_words_flag_nothing() -> None:
    router = Router(Routing.model_validate({"version": 1, "routes": [
        {"name": "r", "incident_type": "malware", "map": {"sev": "detail.level"}, "severity_label": "sev"}]}))
    [(routed_alert, routed, _)] = router.route_all(
        [(Alert(source=AlertSource.eventbridge, title="t", raw={"detail": {"level": "HIGH"}}), "firing")])
    assert routed.severity == "critical" and "unclassified_severity" not in routed_alert.labels
