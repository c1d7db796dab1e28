"""Each source's real payload shape becomes the right Alerts."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import ValidationError

from irp.intake import normalise
from irp.intake.normalise import PayloadError
from irp.intake.payloads import (
    AlertmanagerWebhook,
    GenericAlert,
    GrafanaWebhook,
    PagerDutyWebhook,
    Report,
    SnsMessage,
)
from irp.models import AlertSource

SAMPLES = Path(__file__).parent / "samples"


def _load(name: str) -> dict:
    return json.loads((SAMPLES / name).read_text())


class TestAlertmanager:
    def test_sample(self) -> None:
        doc = _load("alertmanager.json")
        [(alert, alert_event)] = normalise.from_alertmanager(AlertmanagerWebhook.model_validate(doc), doc)
        assert alert.source == AlertSource.alertmanager
        assert alert.fingerprint == "a1c4e2f09b7d3e55"
        assert alert.title == "312 failed logins in 5 minutes for tenant acme-callcenter"
        assert alert.labels["tenant"] == "acme-callcenter"
        assert alert.status == "firing"
        assert alert.observed_at == datetime(2026, 11, 20, 9, 14, 3, 112000, tzinfo=UTC)
        assert "41 distinct IPs" in alert.description and "prometheus.example.internal" in alert.description
        assert alert.raw["groupKey"] == doc["groupKey"] and alert.raw["alerts"] == doc["alerts"]

    def test_group_of_alerts_each_with_its_raw(self) -> None:
        doc = _load("alertmanager.json")
        second = {**doc["alerts"][0], "fingerprint": "b2", "status": "resolved",
                  "labels": {**doc["alerts"][0]["labels"], "tenant": "other"}}
        doc["alerts"].append(second)
        alerts = normalise.from_alertmanager(AlertmanagerWebhook.model_validate(doc), doc)
        assert [(a.fingerprint, event) for a, event in alerts] == [("a1c4e2f09b7d3e55", "firing"), ("b2", "resolved")]
        assert alerts[1].alert.raw["alerts"] == [second]

    def test_missing_fingerprint_comes_from_labels_not_title(self) -> None:
        doc = _load("alertmanager.json")
        del doc["alerts"][0]["fingerprint"]
        first = normalise.from_alertmanager(AlertmanagerWebhook.model_validate(doc), doc)[0].alert
        doc["alerts"][0]["annotations"]["summary"] = "313 failed logins"
        second = normalise.from_alertmanager(AlertmanagerWebhook.model_validate(doc), doc)[0].alert
        assert first.fingerprint == second.fingerprint

    @pytest.mark.parametrize(("starts_at", "expected"), [
        ("2026-11-20T09:14:03", datetime(2026, 11, 20, 9, 14, 3, tzinfo=UTC)),  # no zone: UTC
        ("2026-11-20T10:14:03+01:00", datetime(2026, 11, 20, 9, 14, 3, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),  # Alertmanager's zero time: now
        ("0001-01-01T00:00:00", None),
        ("0001-01-01T02:00:00+03:00", None),
        (None, None),
    ])
    def test_start_time(self, starts_at: str | None, expected: datetime | None) -> None:
        doc = _load("alertmanager.json")
        doc["alerts"][0]["startsAt"] = starts_at
        before = datetime.now(UTC)
        alert = normalise.from_alertmanager(AlertmanagerWebhook.model_validate(doc), doc)[0].alert
        if expected is None:
            assert before <= alert.observed_at <= datetime.now(UTC)
        else:
            assert alert.observed_at == expected

    def test_schema_errors_name_the_field(self) -> None:
        doc = _load("alertmanager.json")
        doc["alerts"][0]["status"] = "burning"
        with pytest.raises(ValidationError) as raised:
            AlertmanagerWebhook.model_validate(doc)
        assert raised.value.errors()[0]["loc"] == ("alerts", 0, "status")


def test_grafana_sample() -> None:
    doc = _load("grafana.json")
    [(alert, alert_event)] = normalise.from_grafana(GrafanaWebhook.model_validate(doc), doc)
    assert (alert.source, alert.fingerprint, alert.title) == (
        AlertSource.grafana, "7f3a9c21d4e8b610", "5xx ratio 18% on rating-api")
    assert alert.labels["grafana_folder"] == "CallCenterRate"


class TestSns:
    def test_cloudwatch_alarm(self) -> None:
        doc = _load("sns-cloudwatch.json")
        [(alert, alert_event)] = normalise.from_sns(SnsMessage.model_validate(doc), doc)
        assert alert.title == 'ALARM: "S3-Evidence-Bucket-PublicRead" in EU (Paris)'
        assert alert.labels["alarm_name"] == "S3-Evidence-Bucket-PublicRead"
        assert alert.labels["kind"] == "cloudwatch_alarm" and alert.labels["account"] == "123456789012"
        assert alert.status == "firing"
        assert alert.observed_at == datetime(2026, 11, 20, 10, 1, 12, 345000, tzinfo=UTC)
        assert alert.fingerprint.startswith("cw-")

    def test_ok_state_resolves_the_same_alarm(self) -> None:
        doc = _load("sns-cloudwatch.json")
        message = json.loads(doc["Message"])
        firing = normalise.from_sns(SnsMessage.model_validate(doc), doc)[0].alert
        doc["Message"] = json.dumps({**message, "NewStateValue": "OK", "OldStateValue": "ALARM"})
        doc["MessageId"] = "another"
        resolved, event = normalise.from_sns(SnsMessage.model_validate(doc), doc)[0]
        assert (resolved.status, event) == ("resolved", "resolved") and resolved.fingerprint == firing.fingerprint

    def test_insufficient_data_is_an_update(self) -> None:
        doc = _load("sns-cloudwatch.json")
        doc["Message"] = json.dumps({**json.loads(doc["Message"]), "NewStateValue": "INSUFFICIENT_DATA"})
        [(alert, event)] = normalise.from_sns(SnsMessage.model_validate(doc), doc)
        assert (alert.status, event) == ("firing", "update")

    def test_aws_health_event(self) -> None:
        doc = _load("sns-health.json")
        [(alert, alert_event)] = normalise.from_sns(SnsMessage.model_validate(doc), doc)
        assert alert.labels["event_source"] == "aws.health"
        assert alert.labels["event_type_code"] == "AWS_EC2_OPERATIONAL_ISSUE"
        assert "increased API error rates" in alert.description

    def test_plain_text_message_is_kept(self) -> None:
        doc = {**_load("sns-cloudwatch.json"), "Message": "backup job failed on db-2\nexit 3", "Subject": None}
        [(alert, alert_event)] = normalise.from_sns(SnsMessage.model_validate(doc), doc)
        assert alert.title == "backup job failed on db-2" and alert.labels["kind"] == "notification"

    def test_alarm_with_unexpected_content_is_still_an_alert(self) -> None:
        doc = {**_load("sns-cloudwatch.json"), "Message": json.dumps({"AlarmName": 3, "NewStateValue": []})}
        [(alert, alert_event)] = normalise.from_sns(SnsMessage.model_validate(doc), doc)
        assert alert.labels["kind"] == "notification"


class TestPagerDuty:
    def test_triggered(self) -> None:
        doc = _load("pagerduty-triggered.json")
        [(alert, alert_event)] = normalise.from_pagerduty(PagerDutyWebhook.model_validate(doc), doc)
        assert alert.fingerprint == "pd-Q2LBHM1CN4AHB0" and alert_event == "firing"
        assert alert.labels["urgency"] == "high" and alert.labels["priority"] == "P1"
        assert alert.title == "Rating API p99 latency above 2 s for 15 minutes"

    def test_resolved_and_annotated_refer_to_the_same_incident(self) -> None:
        resolved = _load("pagerduty-resolved.json")
        note = _load("pagerduty-annotated.json")
        [(r, r_event)] = normalise.from_pagerduty(PagerDutyWebhook.model_validate(resolved), resolved)
        [(n, n_event)] = normalise.from_pagerduty(PagerDutyWebhook.model_validate(note), note)
        assert (r.fingerprint, r.status, r_event) == ("pd-Q2LBHM1CN4AHB0", "resolved", "resolved")
        assert (n.fingerprint, n.status, n_event) == ("pd-Q2LBHM1CN4AHB0", "firing", "update")
        assert "Rolled back release" in n.description

    def test_other_resources_carry_no_alert(self) -> None:
        doc = {"event": {"id": "x", "event_type": "service.updated", "resource_type": "service", "data": {}}}
        assert normalise.from_pagerduty(PagerDutyWebhook.model_validate(doc), doc) == []

    def test_bad_incident_data_names_the_path(self) -> None:
        doc = _load("pagerduty-triggered.json")
        doc["event"]["data"]["id"] = 42
        with pytest.raises(PayloadError) as raised:
            normalise.from_pagerduty(PagerDutyWebhook.model_validate(doc), doc)
        assert raised.value.errors[0][0] == "event.data.id"


def test_generic() -> None:
    doc = _load("generic.json")
    [(alert, alert_event)] = normalise.from_generic(GenericAlert.model_validate(doc), doc)
    assert (alert.fingerprint, alert.labels["incident_type"]) == ("siem-r117-apikey-7f3a", "data_leak")
    assert alert.raw == doc


def test_generic_rejects_unknown_keys() -> None:
    with pytest.raises(ValidationError) as raised:
        GenericAlert.model_validate({"title": "x", "lables": {}})
    assert raised.value.errors()[0]["loc"] == ("lables",)


def test_report() -> None:
    doc = _load("report.json")
    [(alert, alert_event)] = normalise.from_report(Report.model_validate(doc), doc)
    assert alert.source == AlertSource.report
    assert alert.labels["category"] == "account_compromise"
    assert "Claire Martin <claire.martin@acme-callcenter.example>" in alert.description
    again = normalise.from_report(Report.model_validate(doc), doc)[0].alert
    assert again.fingerprint == alert.fingerprint
