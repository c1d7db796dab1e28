"""The review stage's report (§11): markdown, HTML with a timeline chart, metrics, corrective actions."""

from __future__ import annotations

import re

# ruff: noqa: F811
from datetime import UTC, datetime, timedelta
from pathlib import Path

from history_fixtures import build_incident
from service_fixtures import make_ctx

from irp.models import ActionItem, IncidentStatus, Stage, TimelineEntry
from irp.reports.charts import timeline_svg
from irp.reports.review import report_markdown
from tasks.review import ReportArgs, write_report

T0 = datetime(2026, 11, 3, 8, 0, tzinfo=UTC)
HOSTILE = "<img src=x onerror=alert(1)> & {{ 7*7 }}"


def reviewed_incident():
    incident = build_incident("INC-20261103-R1", detected=T0, restored_after=timedelta(hours=30),
                              title=HOSTILE, status=IncidentStatus.reviewing,
                              actions=[ActionItem(id="A-C1", title="Add an egress control", owner="security@",
                                                  stage=Stage.review, due_at=T0 + timedelta(days=30)),
                                       ActionItem(id="A-M1", title="Revoke sessions", owner="oncall",
                                                  stage=Stage.contain)])
    extra = [
        TimelineEntry(at=T0 + timedelta(hours=1), kind="step", stage=Stage.contain, step="block",
                      message="step block (aws.block_ip) failed (escalate): AccessDenied"),
        TimelineEntry(at=T0 + timedelta(hours=1), kind="escalation", stage=Stage.contain, step="block",
                      message="step block failed and is escalated to the security team: AccessDenied"),
        TimelineEntry(at=T0 + timedelta(hours=1), kind="approval", stage=Stage.contain, step="suspend",
                      actor="Alice", message="step suspend approved by Alice (1/1): confirmed"),
        TimelineEntry(at=T0 + timedelta(hours=2), kind="step", stage=Stage.contain, step="gdpr",
                      message="step gdpr (timeline.record) skipped: condition is false: incident.dry_run"),
    ]
    timeline = sorted([*incident.timeline, *extra], key=lambda e: e.at)
    return incident.model_copy(update={"timeline": timeline, "stages": incident.stages[:5]})


class TestReport:
    def test_markdown_has_every_section_of_the_review(self) -> None:
        args = ReportArgs(root_cause="A service account token leaked in a CI log.", what_worked="Fast DLP alert.")
        text = report_markdown(reviewed_incident(), args, [], now=T0 + timedelta(days=2))
        for heading in ("# Post-incident review — INC-20261103-R1", "## Summary", "## Response metrics",
                        "## Root cause", "## What worked", "## What did not", "## Corrective actions",
                        "## Response measures", "## Timeline", "## Evidence"):
            assert heading in text
        assert "A service account token leaked in a CI log." in text
        assert "| restore | 1d 06h | 1d 00h | missed |" in text
        worked = text.split("## What worked")[1].split("##")[0]
        did_not = text.split("## What did not")[1].split("##")[0]
        assert "- Fast DLP alert." in worked and "contain within its target: 3h 00m" in worked
        assert "step suspend approved by Alice (1/1): confirmed" in worked
        assert "restore missed its target of 1d 00h: 1d 06h" in did_not
        assert "step block (aws.block_ip) failed (escalate): AccessDenied" in did_not
        assert "escalated to the security team" in did_not
        assert "condition is false" not in did_not  # a false condition is not a failure
        corrective = text.split("## Corrective actions")[1].split("##")[0]
        assert "| A-C1 | Add an egress control | security@ | 2026-12-03 08:00 | open |" in corrective
        assert "A-M1" not in corrective and "| A-M1 | contain | Revoke sessions |" in text

    def test_the_step_archives_markdown_html_chart_and_metrics(self, evidence_root: Path) -> None:
        ctx = make_ctx(evidence_root, action="review.write_report", step="report", stage=Stage.review,
                       dry_run=True, incident=reviewed_incident())
        output = write_report(ReportArgs(root_cause="<b>not bold</b>"), ctx)
        assert output["html"] == "review/report.html" and output["artifact_key"] is None
        names = [item.name for item in ctx.evidence]
        assert names == ["review/report.md", "review/timeline.svg", "review/report.html", "review/metrics.json"]
        with ctx.store.open(ctx.incident.id, "review/report.html") as handle:
            html = handle.read().decode()
        assert "<img src=x" not in html and "&lt;img src=x onerror=alert(1)&gt; &amp; {{ 7*7 }}" in html
        assert "&lt;b&gt;not bold&lt;/b&gt;" in html
        assert html.count("<svg") == 1 and "response timeline (UTC)" in html
        assert '<td class="missed">missed</td>' in html
        assert "Add an egress control" in html and "security@" in html and "2026-12-03 08:00:00" in html
        assert output["metrics"]["restore"].startswith("1d 06h (missed")
        assert ctx.timeline[-1].message == "post-incident review report written"


class TestTimelineChart:
    def test_one_bar_per_stage_and_markers_with_escaped_labels(self) -> None:
        svg = timeline_svg(reviewed_incident())
        assert svg.startswith("<svg") and svg.endswith("</svg>")
        assert len(re.findall(r'id="stage-\d+"', svg)) == 5  # detect, analyse, contain, restore, notify (initial)
        assert len(re.findall(r'id="marker-\d+"', svg)) == 3  # an escalation, an approval, a notification
        assert ">notify (initial)<" in svg and ">approvals<" in svg
        assert "<img" not in svg

    def test_a_detection_long_before_the_response_is_a_note_not_a_squashed_chart(self) -> None:
        incident = build_incident("INC-2", detected=T0, aware_after=timedelta(days=9))
        svg = timeline_svg(incident)
        assert "detected 9d 00h before that (2026-11-03 08:00:00)" in svg


def _tick_labels(svg: str, axis: str) -> list[str]:
    """The tick labels of one axis, in order, from matplotlib's SVG (groups xtick_N / ytick_N)."""
    chunks = re.split(rf'<g id="{axis}tick_\d+">', svg)[1:]
    return [re.search(r"<text[^>]*>([^<]*)</text>", chunk)[1] for chunk in chunks]


class TestReadableAxes:
    def test_a_response_of_seconds_has_distinct_time_ticks(self) -> None:
        incident = build_incident("INC-3", detected=T0, aware_after=timedelta(0), contained_after=timedelta(seconds=2),
                                  restored_after=timedelta(seconds=3), notified_after=timedelta(seconds=1))
        labels = _tick_labels(timeline_svg(incident), "x")
        assert len(labels) >= 3 and len(set(labels)) == len(labels), labels

    def test_small_mean_times_have_distinct_value_ticks(self) -> None:
        from irp.reports.charts import line_chart_svg

        labels = _tick_labels(line_chart_svg("t", ["2026-10", "2026-11"], {"MTTC": [0.01, 0.03]}), "y")
        assert len(labels) >= 3 and len(set(labels)) == len(labels), labels
