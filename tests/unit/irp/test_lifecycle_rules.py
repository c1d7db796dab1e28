"""The lifecycle's rules (irp/lifecycle.py): what each stage waits for, when it ended, what people decided."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from irp.engine.script import load_script, parse_offset
from irp.errors import PlaybookError
from irp.lifecycle import (
    Decision,
    decision_entry,
    fold,
    needs,
    open_measures,
    parse_corrective,
    stage_end,
    waiting_text,
)
from irp.models import (
    ActionItem,
    Incident,
    IncidentStatus,
    IncidentType,
    NotificationRecord,
    ReviewOutcome,
    Severity,
    Stage,
    StageOutcome,
    StepStatus,
    Waiting,
)
from irp.reports.kpis import measure_incident

T0 = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def at(minutes: float) -> datetime:
    return T0 + timedelta(minutes=minutes)


def incident(*stages: Stage, actions: list[ActionItem] = (), **extra) -> Incident:
    outcomes = [StageOutcome(stage=s, phase="final" if s == Stage.notify else None, status=StepStatus.completed,
                             started_at=at(1), ended_at=at(2)) for s in stages]
    return Incident(id="INC-20261120-AAAAAA", type=IncidentType.data_leak, severity=Severity.critical, title="t",
                    detected_at=T0, aware_at=T0, stages=outcomes, actions=list(actions), **extra)


def measure(item_id: str, stage: Stage = Stage.contain, due: float | None = 60) -> ActionItem:
    return ActionItem(id=item_id, title=f"do {item_id}", owner="oncall", stage=stage,
                      due_at=at(due) if due is not None else None)


def decide(record: Incident, when: float, **fields) -> Incident:
    fields.setdefault("id", f"d-{when}-{fields.get('decision')}-{fields.get('measure', '')}")
    fields.setdefault("by", "alice")
    entry = decision_entry(Decision(**fields), at(when))
    return fold(record.model_copy(update={"timeline": [*record.timeline, entry]}))


class TestNeeds:
    def test_a_stage_waits_for_its_open_measures_and_ends_when_the_last_closes(self) -> None:
        record = incident(Stage.contain, actions=[measure("A-1"), measure("A-2", due=30)])
        assert needs(record, Stage.contain, at(10)) == ["2 measure(s) open (A-2, A-1), the first due in 20 min"]
        assert stage_end(record, Stage.contain) is None
        record = decide(record, 40, decision="close_measure", measure="A-2", note="done")
        record = decide(record, 90, decision="close_measure", measure="A-1", note="done")
        assert needs(record, Stage.contain) == []
        end = stage_end(record, Stage.contain)
        assert (end.at, end.how, end.by) == (at(90), "measures_closed", "alice")

    def test_a_stage_without_measures_ends_with_its_automatic_part(self) -> None:
        record = incident(Stage.contain)
        assert needs(record, Stage.contain) == [] and stage_end(record, Stage.contain).at == at(2)
        assert stage_end(incident(), Stage.contain) is None  # not reached: not ended

    def test_restore_waits_for_a_confirmation_even_without_measures(self) -> None:
        record = incident(Stage.contain, Stage.restore)
        assert needs(record, Stage.restore) == ["a responder's confirmation that service and data are back and checked"]
        assert stage_end(record, Stage.restore) is None
        record = decide(record, 300, decision="advance", stage=Stage.restore, note="checked")
        assert needs(record, Stage.restore) == [] and stage_end(record, Stage.restore).at == at(300)

    def test_a_responder_ends_a_stage_with_measures_still_open(self) -> None:
        record = decide(incident(Stage.contain, actions=[measure("A-1")]), 15, decision="advance",
                        stage=Stage.contain, note="contained: keys revoked by hand, see SEC-42")
        end = stage_end(record, Stage.contain)
        assert (end.how, end.note, end.at) == ("advanced", "contained: keys revoked by hand, see SEC-42", at(15))
        assert [m.id for m in open_measures(record)] == ["A-1"]  # still listed, still to do

    def test_review_waits_for_its_outcome_and_for_analysis_measures(self) -> None:
        record = incident(Stage.analyse, Stage.review, actions=[measure("A-9", Stage.analyse)])
        assert len(needs(record, Stage.review)) == 2
        review = ReviewOutcome(by="carol", at=at(600), causes="token in a CI log")
        record = decide(record, 600, decision="review", review=review)
        assert needs(record, Stage.review, at(600)) == ["1 measure(s) open (A-9), the first overdue by 9 h"]
        record = decide(record, 700, decision="close_measure", measure="A-9", note="assessed")
        assert needs(record, Stage.review) == [] and stage_end(record, Stage.review).how == "review_recorded"


class TestDecisions:
    def test_the_same_decision_twice_counts_once_and_a_stale_record_keeps_it(self) -> None:
        record = incident(Stage.contain, actions=[measure("A-1")])
        once = decide(record, 5, decision="close_measure", measure="A-1", note="done", id="same")
        twice = decide(once, 50, decision="close_measure", measure="A-1", note="again", id="same")
        assert twice.actions[0].closed_at == at(5) and twice.actions[0].resolution == "done"
        stale = once.model_copy(update={"actions": [measure("A-1")]})  # a run saved its older copy
        assert fold(stale).actions[0].status == "closed"

    def test_a_review_creates_its_corrective_actions_with_stable_ids(self) -> None:
        review = ReviewOutcome(by="carol", at=at(600), causes="c", corrective=[
            parse_corrective("title=Scan CI logs,owner=dev-lead,due=2027-02-01")])
        record = decide(incident(Stage.review), 600, decision="review", review=review)
        [item] = [a for a in record.actions if a.stage == Stage.review]
        assert (item.title, item.owner, item.due_at.date().isoformat()) == ("Scan CI logs", "dev-lead", "2027-02-01")
        assert fold(record).actions == record.actions  # folding again changes nothing

    def test_a_false_positive_ends_the_incident(self) -> None:
        record = decide(incident(Stage.contain, actions=[measure("A-1")]), 20, decision="false_positive",
                        note="the nightly backup")
        assert record.status == IncidentStatus.false_positive and record.closure.how == "false_positive"
        assert waiting_text(record).startswith("false_positive on 2026-11-20 09:20 UTC by alice")

    @pytest.mark.parametrize(("text", "message"), [
        ("Scan CI logs", "expected title=…,owner=…"),
        ("title=Scan,owner=x,colour=red", "unknown field 'colour'; valid: title, owner, due"),
        ("title=Scan", "owner: Field required"),
        ("title=Scan,owner=x,due=tomorrow", "due:"),
    ])
    def test_a_bad_corrective_action_says_what_is_wrong(self, text: str, message: str) -> None:
        with pytest.raises(ValueError, match=message):
            parse_corrective(text)


class TestStatusText:
    def test_a_waiting_incident_says_what_it_waits_for(self) -> None:
        record = incident(Stage.contain, actions=[measure("A-1", due=40), measure("A-2", due=None)],
                          status=IncidentStatus.containing, waiting=Waiting(stage=Stage.contain, since=at(3)))
        assert waiting_text(record, at(0)) == "containing — 2 measure(s) open (A-1, A-2), the first due in 40 min"
        late = waiting_text(record, at(160))
        assert "overdue by 2 h" in late


class TestMetricsFromRealEvents:
    def test_a_message_rendered_but_not_sent_is_not_a_notification(self) -> None:
        not_sent = NotificationRecord(id="N-1", at=at(5), audience="client", recipient="acme",
                                      template="client_notification", subject="s", status="not_sent")
        record = incident(Stage.contain, notifications=[not_sent])
        assert measure_incident(record, now=at(10)).measures["notify"].state == "pending"
        sent = not_sent.model_copy(update={"id": "N-2", "at": at(7), "status": "sent"})
        assert measure_incident(record.model_copy(update={"notifications": [not_sent, sent]}),
                                now=at(10)).measures["notify"].seconds == 7 * 60

    def test_contain_counts_to_the_last_measure_closed_not_to_the_automation(self) -> None:
        record = decide(incident(Stage.contain, actions=[measure("A-1")]), 180, decision="close_measure",
                        measure="A-1", note="done")
        assert measure_incident(record, now=at(200)).measures["contain"].seconds == 180 * 60
        assert measure_incident(incident(Stage.contain, actions=[measure("A-1")]), now=at(200)
                                ).measures["contain"].reached_at is None


class TestDecisionsFile:
    def test_offsets(self) -> None:
        assert parse_offset("1h30m") == timedelta(hours=1, minutes=30) and parse_offset("3d") == timedelta(days=3)
        with pytest.raises(ValueError, match="not an offset"):
            parse_offset("soon")

    def test_a_typo_key_is_reported_with_its_line(self, tmp_path: Path) -> None:
        path = tmp_path / "decisions.yaml"
        path.write_text("decisions:\n  - at: 10m\n    by: alice\n    aprove: cut_key\n")
        with pytest.raises(PlaybookError) as caught:
            load_script(path)
        text = str(caught.value)
        assert f"{path}:4:5" in text and "unknown key 'aprove'" in text

    def test_one_decision_per_entry(self, tmp_path: Path) -> None:
        path = tmp_path / "decisions.yaml"
        path.write_text("decisions:\n  - {at: 10m, by: a, approve: x, reject: x}\n")
        with pytest.raises(PlaybookError, match="give exactly one of"):
            load_script(path)
