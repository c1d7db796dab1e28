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


BROKEN_ROUTING = REPO / "tests" / "unit" / "playbook" / "broken_routing"


class TestMapping:
    """A route's map: labels from the source document (JMESPath), data like any label."""

    EVENT = {"detail-type": "GuardDuty Finding", "detail": {
        "type": "UnauthorizedAccess:IAMUser/MaliciousIPCaller", "severity": 7.5, "id": "f1",
        "resource": {"accessKeyDetails": {"accessKeyId": "AKIAIOSFODNN7EXAMPLE", "userName": "bob"}},
        "tags": ["a", 1, True, None, {"x": 1}], "nested": {"deep": {"object": 1}}}}

    def router(self, **route) -> Router:
        return Router(Routing.model_validate({"version": 1, "routes": [
            {"name": "r", "incident_type": "account_compromise", **route}]}))

    def alert(self, raw=None, source: str = "eventbridge", **labels: str) -> Alert:
        return Alert(source=AlertSource(source), title="t", labels=labels, raw=self.EVENT if raw is None else raw)

    def test_labels_from_the_document_reach_the_alert(self) -> None:
        router = self.router(map={"access_key": "detail.resource.accessKeyDetails.accessKeyId",
                                  "score": "detail.severity", "tags": "detail.tags", "nothing": "detail.missing",
                                  "object": "detail.nested"})
        alert = self.alert(kind="eventbridge")
        [(routed_alert, routed, _)] = router.route_all([(alert, "firing")])
        assert dict(routed.labels) == {"access_key": "AKIAIOSFODNN7EXAMPLE", "score": "7.5", "tags": "a,1,true"}
        assert routed_alert.labels == {"kind": "eventbridge", "access_key": "AKIAIOSFODNN7EXAMPLE", "score": "7.5",
                                       "tags": "a,1,true"}
        assert routed_alert.fingerprint == alert.fingerprint  # the same alert, with more labels

    def test_a_label_the_source_set_is_kept(self) -> None:
        routed = self.router(map={"access_key": "detail.resource.accessKeyDetails.accessKeyId"}).route(
            self.alert(access_key="AKIASOURCESAIDTHIS01"))
        assert routed.labels == ()

    def test_matchers_and_grouping_see_mapped_labels(self) -> None:
        router = self.router(map={"finding_type": "detail.type", "access_key": "detail.resource.accessKeyDetails.accessKeyId"},
                             labels_regex={"finding_type": "UnauthorizedAccess:IAMUser/.*"}, group_by=["access_key"])
        routed = router.route(self.alert())
        assert routed is not None
        assert routed.group_key == router.route(self.alert(raw={**self.EVENT, "id": "other"})).group_key
        assert router.route(self.alert(raw={"detail": {"type": "Recon:EC2/PortProbeUnprotectedPort"}})) is None

    def test_an_expression_failing_on_this_document_sets_nothing(self) -> None:
        routed = self.router(map={"n": "length(detail.severity)", "k": "detail.id"}).route(self.alert())
        assert dict(routed.labels) == {"k": "f1"}  # length() of a number: a type error, the label is not set

    def test_sns_maps_the_event_its_message_carries(self) -> None:
        raw = {"Type": "Notification", "Message": json.dumps(self.EVENT)}
        routed = self.router(map={"k": "detail.resource.accessKeyDetails.accessKeyId"}).route(self.alert(raw, "sns"))
        assert dict(routed.labels) == {"k": "AKIAIOSFODNN7EXAMPLE"}

    def test_severity_label_is_read_through_the_vocabulary(self) -> None:
        router = self.router(map={"severity": "detail.sev"}, severity_label="severity", severity="minor")
        hints = [router.route(self.alert(raw={"detail": {"sev": value}})).severity for value in ("HIGH", "Medium", "low",
                                                                                                   "critical", "weird")]
        assert hints == [Severity.critical, Severity.major, Severity.minor, Severity.critical, Severity.minor]

    def test_data_categories_in_the_playbooks_words_unknown_kept(self) -> None:
        routed = self.router().route(self.alert(data_categories="pii, Recordings,contact,shoe_sizes"))
        assert dict(routed.labels) == {"data_categories": "identification,call_recordings,contact,shoe_sizes"}
        assert self.router().route(self.alert(data_categories="contact")).labels == ()

    def test_synonyms_from_configuration(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from irp.settings import get_settings

        monkeypatch.setenv("IRP_VOCABULARY_SYNONYMS", '{"data_categories": {"shoe sizes": "special_category"}, '
                                                      '"severity": {"sev1": "critical"}}')
        get_settings.cache_clear()
        try:
            routed = self.router(map={"s": "'SEV1'"}, severity_label="s").route(
                self.alert(data_categories="shoe_sizes"))
            assert (dict(routed.labels)["data_categories"], routed.severity) == ("special_category", Severity.critical)
        finally:
            get_settings.cache_clear()

    def test_bad_synonyms_setting_is_refused(self) -> None:
        from pydantic import ValidationError

        from irp.settings import Settings

        with pytest.raises(ValidationError, match="'pii' -> 'people', not a word of the vocabulary; valid: "
                                                  "identification, contact"):
            Settings(vocabulary_synonyms={"data_categories": {"pii": "people"}})
        with pytest.raises(ValidationError, match="unknown vocabulary 'colours'; valid: data_categories, severity"):
            Settings(vocabulary_synonyms={"colours": {}})

    def test_a_mapping_never_states_clients(self) -> None:
        routed = self.router(map={"clients": "'acme'", "tenant": "'acme'"}).route(self.alert())
        assert routed.clients == () and routed.run_clients() == []
        assert dict(routed.labels) == {"clients": "acme", "tenant": "acme"}  # data, like the alert's own labels

    def test_broken_expressions_golden_file(self, monkeypatch: pytest.MonkeyPatch) -> None:
        from typer.testing import CliRunner

        from irp.cli import app

        monkeypatch.chdir(REPO)
        case = (BROKEN_ROUTING / "jmespath").relative_to(REPO)
        result = CliRunner().invoke(app, ["playbooks", "validate", str(case / "routing.yaml")])
        assert result.exit_code == 1
        assert result.stdout == (BROKEN_ROUTING / "jmespath" / "expected.txt").read_text()
        with pytest.raises(PlaybookError):
            Router.from_file(case / "routing.yaml")  # the intake refuses the file too
