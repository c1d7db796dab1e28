"""Response metrics from known timestamps: durations, deadlines met or missed, means by type and severity."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from history_fixtures import build_incident

from irp.errors import ConfigurationError
from irp.models import IncidentStatus, IncidentType, Severity
from irp.reports.kpis import aggregate, format_duration, measure_incident, targets
from irp.settings import get_settings

T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)


class TestOneIncident:
    def test_durations_and_deadlines_from_known_timestamps(self) -> None:
        incident = build_incident("INC-1", detected=T0, aware_after=timedelta(minutes=5),
                                  contained_after=timedelta(hours=3), restored_after=timedelta(hours=30),
                                  notified_after=timedelta(hours=2))
        m = measure_incident(incident, now=T0 + timedelta(days=3)).measures
        assert {k: v.seconds for k, v in m.items()} == {
            "acknowledge": 300, "contain": 3 * 3600, "restore": 30 * 3600, "notify": 2 * 3600}
        # critical targets: acknowledge 15 min, contain 4 h, restore 24 h, notify 24 h (from awareness)
        assert {k: v.state for k, v in m.items()} == {
            "acknowledge": "met", "contain": "met", "restore": "missed", "notify": "met"}
        assert m["notify"].started_at == T0 + timedelta(minutes=5)

    def test_the_severity_chooses_the_targets(self) -> None:
        incident = build_incident("INC-1", severity=Severity.major, detected=T0, restored_after=timedelta(hours=30))
        assert measure_incident(incident).measures["restore"].state == "met"  # major: 72 h

    def test_a_milestone_not_reached_is_pending_until_its_target_passes(self) -> None:
        incident = build_incident("INC-1", detected=T0, contained_after=None, restored_after=None,
                                  notified_after=None, status=IncidentStatus.containing)
        with time_machine.travel(T0 + timedelta(hours=1), tick=False):
            states = {k: v.state for k, v in measure_incident(incident).measures.items()}
        assert states == {"acknowledge": "met", "contain": "pending", "restore": "pending", "notify": "pending"}
        with time_machine.travel(T0 + timedelta(hours=4, minutes=1), tick=False):
            states = {k: v.state for k, v in measure_incident(incident).measures.items()}
        assert states == {"acknowledge": "met", "contain": "missed", "restore": "pending", "notify": "pending"}

    def test_no_notification_on_an_ended_incident_is_not_applicable(self) -> None:
        incident = build_incident("INC-1", detected=T0, notified_after=None)
        measure = measure_incident(incident, now=T0 + timedelta(days=30)).measures["notify"]
        assert (measure.state, measure.met, measure.seconds) == ("n/a", None, None)


class TestTargets:
    def test_settings_override_some_targets_and_keep_the_others(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("IRP_RESPONSE_TARGETS_MINUTES", '{"critical": {"restore": 2000}}')
        get_settings.cache_clear()
        table = targets()
        assert table[Severity.critical]["restore"] == 2000 * 60
        assert table[Severity.critical]["contain"] == 240 * 60
        incident = build_incident("INC-1", detected=T0, restored_after=timedelta(hours=30))
        assert measure_incident(incident).measures["restore"].state == "met"

    @pytest.mark.parametrize(("raw", "message"), [
        ({"urgent": {"contain": 5}}, "unknown severity 'urgent'; valid: critical, major, minor"),
        ({"critical": {"fix": 5}}, "critical.fix: unknown metric; valid: acknowledge, contain, restore, notify"),
        ({"critical": {"contain": -1}}, "critical.contain: -1 is not a positive number of minutes"),
        ({"critical": 5}, "critical must map metrics to minutes"),
    ])
    def test_invalid_targets_say_what_and_what_is_valid(self, raw, message: str) -> None:
        with pytest.raises(ConfigurationError, match="IRP_RESPONSE_TARGETS_MINUTES") as caught:
            targets(raw)
        assert message in str(caught.value)


class TestAggregates:
    def test_means_and_deadlines_by_type_and_severity(self) -> None:
        rows = [
            measure_incident(build_incident("INC-1", detected=T0, restored_after=timedelta(hours=10)), now=T0),
            measure_incident(build_incident("INC-2", detected=T0, restored_after=timedelta(hours=30)), now=T0),
            measure_incident(build_incident("INC-3", type=IncidentType.malware, severity=Severity.minor,
                                            detected=T0, contained_after=timedelta(hours=1),
                                            restored_after=timedelta(hours=2)), now=T0),
        ]
        groups = {(a.group, a.key): a for a in aggregate(rows)}
        assert set(groups) == {("all", "all"), ("type", "data_leak"), ("type", "malware"),
                               ("severity", "critical"), ("severity", "minor")}
        overall = groups[("all", "all")]
        assert overall.incidents == 3
        assert overall.mean_seconds["restore"] == pytest.approx((10 + 30 + 2) / 3 * 3600)  # MTTR
        assert overall.mean_seconds["contain"] == pytest.approx((3 + 3 + 1) / 3 * 3600)  # MTTC
        assert overall.mean_seconds["acknowledge"] == 300  # MTTA
        leak = groups[("type", "data_leak")]
        assert leak.mean_seconds["restore"] == 20 * 3600
        assert (leak.met["restore"], leak.decided["restore"]) == (1, 2)  # 10 h met, 30 h missed (24 h target)
        assert groups[("severity", "minor")].met_ratio("restore") == 1.0


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "—"), (0, "0s"), (59.6, "1m 00s"), (245, "4m 05s"), (3 * 3600 + 7 * 60, "3h 07m"), (52 * 3600, "2d 04h")])
def test_durations_read_naturally(seconds, text: str) -> None:
    assert format_duration(seconds) == text
