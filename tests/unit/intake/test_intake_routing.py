"""Routing: the shipped file, FILE:LINE:COL errors, and which route an alert takes."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from irp.errors import PlaybookError
from irp.intake.routing import Router
from irp.models import Alert, AlertSource, IncidentType, Severity
from irp.playbook.loader import load_routing, validate_routing
from irp.playbook.models import Routing, routing_json_schema

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / "playbooks" / "routing.yaml"
SCHEMA = REPO / "playbooks" / "schema" / "routing.schema.json"


def _alert(source: str = "alertmanager", title: str = "t", **labels: str) -> Alert:
    return Alert(source=AlertSource(source), title=title, labels=labels)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "routing.yaml"
    path.write_text(text)
    return path


class TestShippedRouting:
    def test_is_valid(self) -> None:
        assert validate_routing(SHIPPED) == []

    def test_schema_file_is_current(self) -> None:
        committed = json.loads(SCHEMA.read_text())
        assert committed == json.loads(json.dumps(routing_json_schema())), (
            "playbooks/schema/routing.schema.json is stale: regenerate it with routing_json_schema()")

    @pytest.mark.parametrize(("alert", "route", "incident_type", "severity"), [
        (_alert(alertname="ExcessiveLoginFailures", tenant="acme"), "login-brute-force",
         IncidentType.account_compromise, Severity.major),
        (_alert("grafana", alertname="RatingAPIErrorRate", service="rating-api"), "service-unavailable",
         IncidentType.service_unavailability, None),
        (_alert("sns", kind="cloudwatch_alarm", alarm_name="S3-Evidence-Bucket-PublicRead"), "aws-public-exposure",
         IncidentType.data_leak, Severity.critical),
        (_alert("sns", kind="cloudwatch_alarm", alarm_name="RDS-CPU-High"), "aws-alarm",
         IncidentType.technical_failure, None),
        (_alert("generic", incident_type="malware"), "generic-by-type", IncidentType.malware, None),
        (_alert("report", category="data_leak"), "report-by-category", IncidentType.data_leak, None),
        (_alert("pagerduty", urgency="high"), "pagerduty-high-urgency", IncidentType.technical_failure,
         Severity.major),
        (_alert("pagerduty", urgency="low"), "pagerduty", IncidentType.technical_failure, Severity.minor),
    ])
    def test_routes(self, alert: Alert, route: str, incident_type: IncidentType, severity: Severity | None) -> None:
        routed = Router.from_file(SHIPPED).route(alert)
        assert routed is not None
        assert (routed.route, routed.incident_type, routed.severity) == (route, incident_type, severity)

    @pytest.mark.parametrize("alert", [
        _alert(alertname="DiskAlmostFull"),
        _alert("generic", incident_type="not_a_type"),
        _alert("report", category="other"),
    ])
    def test_unmatched_alerts_are_unrouted(self, alert: Alert) -> None:
        assert Router.from_file(SHIPPED).route(alert) is None


class TestMatching:
    def router(self, **route) -> Router:
        return Router(Routing.model_validate({"version": 1, "routes": [
            {"name": "r", "incident_type": "malware", **route}]}))

    def test_a_route_may_state_the_clients_of_its_alerts(self) -> None:
        routed = self.router(source="sns", labels={"topic": "acme-alarms"}, clients=["acme"]).route(
            Alert(source=AlertSource.sns, title="t", labels={"topic": "acme-alarms", "tenant": "globex"}))
        assert routed.clients == ("acme",)  # the route's word, not the alert's tenant label
        assert [(c["client"], c["source"], c["confirmed"]) for c in routed.run_clients()] == [("acme", "routing", True)]
        assert self.router().route(_alert(tenant="globex")).clients == ()

    def test_first_match_wins(self) -> None:
        router = Router(Routing.model_validate({"version": 1, "routes": [
            {"name": "a", "labels": {"x": "1"}, "incident_type": "malware"},
            {"name": "b", "incident_type": "cyberattack"}]}))
        assert router.route(_alert(x="1")).route == "a"
        assert router.route(_alert(x="2")).route == "b"

    def test_regex_must_match_the_whole_value(self) -> None:
        router = self.router(labels_regex={"alertname": "WAF.*"})
        assert router.route(_alert(alertname="WAFBlocked"))
        assert router.route(_alert(alertname="NoWAFBlocked")) is None

    def test_empty_label_value_matches_a_missing_label(self) -> None:
        router = self.router(labels={"env": ""})
        assert router.route(_alert())
        assert router.route(_alert(env="prod")) is None

    def test_source_list_and_title(self) -> None:
        router = self.router(source=["grafana", "sns"], title_regex="(?i)ransom")
        assert router.route(_alert("grafana", title="Ransomware note found"))
        assert router.route(_alert("alertmanager", title="Ransomware note found")) is None
        assert router.route(_alert("sns", title="disk full")) is None

    def test_default_catches_the_rest(self) -> None:
        router = Router(Routing.model_validate({"version": 1, "routes": [],
                                                "default": {"incident_type": "technical_failure"}}))
        assert router.route(_alert()).route == "default"

    def test_grouping_key(self) -> None:
        plain = self.router()
        a, b = _alert(title="one", tenant="x"), _alert(title="two", tenant="x")
        assert plain.route(a).group_key != plain.route(b).group_key
        grouped = self.router(group_by=["tenant"])
        assert grouped.route(a).group_key == grouped.route(b).group_key
        assert grouped.route(a).group_key != grouped.route(_alert(tenant="y")).group_key

    def test_grouping_key_is_the_one_journals_hold(self) -> None:
        """Open incidents are found by this key across restarts and upgrades: its formula never changes."""
        router = self.router(group_by=["tenant", "alertname", "missing"])
        for _ in range(2):  # computed, then from the cache
            key = router.route(_alert(alertname="Ä \"x\"", tenant="acme")).group_key
            values = {"tenant": "acme", "alertname": 'Ä "x"', "missing": ""}
            digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()[:16]
            assert key == f"route:r:{digest}"


class TestErrors:
    def test_unknown_key_and_bad_type_located(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "version: 1\nroutes:\n  - name: a\n    incident_typ: malware\n"
                                "  - name: b\n    incident_type: ransomware\n")
        problems = [str(p) for p in validate_routing(path)]
        assert f"{path}:4:5: routes.0.incident_typ: unknown key 'incident_typ'; valid keys: name, description, " \
               "source, labels, labels_regex, title_regex, incident_type, incident_type_label, severity, map, " \
               "severity_label, group_by, clients" in problems
        assert any(p.startswith(f"{path}:6:5: routes.1.incident_type: Input should be 'unauthorized_access'")
                   for p in problems)

    def test_bad_regex_duplicate_name_and_missing_type(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "version: 1\nroutes:\n  - name: a\n    incident_type: malware\n"
                                "    labels_regex:\n      alertname: 'WAF(['\n"
                                "  - name: a\n    labels: {x: y}\n")
        problems = [str(p) for p in validate_routing(path)]
        assert problems == [
            f"{path}:7:5: routes.1.name: duplicate route name 'a' (first at routes.0)",
            f"{path}:7:5: routes.1: set exactly one of incident_type and incident_type_label",
            f"{path}:6:7: routes.0.labels_regex.alertname: invalid regular expression 'WAF([': "
            "unterminated character set at position 4",
        ]

    def test_yaml_syntax_error(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "version: 1\nroutes: [\n")
        with pytest.raises(PlaybookError) as raised:
            load_routing(path)
        assert str(raised.value).startswith(f"{path}:3:1: YAML syntax error")

    def test_yaml_tags_and_recursive_merges_are_refused_where_they_are(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "version: 1\nroutes:\n  - name: a\n    incident_type: !!python/object/apply:os.system [id]\n")
        assert [str(p) for p in validate_routing(path)] == [
            f"{path}:4:20: routes.0.incident_type: YAML tag !!python/object/apply:os.system is not allowed: "
            "only plain values are (strings, numbers, booleans, null, lists, mappings)"]
        path = _write(tmp_path, "version: 1\nroutes:\n  - &r\n    name: a\n    <<: *r\n")
        with pytest.raises(PlaybookError) as raised:
            load_routing(path)
        assert str(raised.value) == (f"{path}:5:5: routes.0.<<: recursive alias: this value refers to a node "
                                     "that contains it (an anchor used inside itself)")

    def test_wrong_version(self, tmp_path: Path) -> None:
        path = _write(tmp_path, "version: 2\nroutes: []\n")
        assert [str(p) for p in validate_routing(path)] == [f"{path}:1:1: version: Input should be 1, got 2"]
