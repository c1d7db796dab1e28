"""Facts for letters: what an external notification may state, read from the incident's record and timeline.

A letter states what happened, never what a playbook planned (policy §7; GDPR Art. 33(3), 34; NIS2 Art. 23):

- a measure is **done** when its containment or restoration step completed (with its time) or a person
  closed it; **in progress** while a person's measure is open; **planned** when the review decided it.
  A step skipped or failed is never listed as taken (the measure a person takes over instead is in
  progress until closed);
- the incident is described by the text a responder confirmed (`fact_entry("description", …)`), else
  by the letter's own wording for the incident type: never by the alert's title or free text;
- times are in Europe/Paris with the zone named; the breach's start (when known), its detection
  and Confluent Digital's awareness are three facts;
- numbers are formatted the letter's language's way (« 48 000 », narrow no-break space);
- the data subjects' categories come from a responder's statement, else from the data categories;
- the legal position is the one the obligations were decided with (`gdpr_role` of the assessment,
  else IRP_GDPR_ROLE): a controller notifies the authority and decides on Art. 34; a processor tells
  the Client, its controller, and assists it (Art. 33(2), 28(3)(f)).

`letter_facts` returns plain values (strings, lists, dicts) for the templates' `facts` variable;
the wording itself lives in the templates (playbooks/templates/_texts.<lang>.j2).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from zoneinfo import ZoneInfo

from irp.lifecycle import fold
from irp.models import ActionItem, Incident, NotificationRecord, Stage, TimelineEntry, utcnow
from irp.notifications.obligations import notifications_of

__all__ = ["FACT", "FACT_FIELDS", "PARIS", "fact_entry", "letter_facts", "number", "paris_time", "subjects_of"]

PARIS = ZoneInfo("Europe/Paris")
FACT = "letter_fact"
FACT_FIELDS = ("description", "breach_started_at", "data_subjects", "cross_border", "root_cause")
MET = ("sent", "partial")
_MONTHS_EN = ("January", "February", "March", "April", "May", "June", "July", "August", "September", "October",
              "November", "December")
_MEASURE_STAGES = (Stage.contain, Stage.restore)
# Actions whose completed step is a measure a letter may report (the others read, record or tell).
_MEASURE_NAMESPACES = ("aws.", "platform.", "actions.")
_READ_ONLY = ("aws.describe_", "aws.list_", "aws.lookup_", "aws.query_", "aws.collect_")
# Who the data of each category is about, at CallCenterRate (GDPR Art. 33(3)(a): categories of data subjects).
_SUBJECTS = {
    "call_recordings": ("callers", "agents"), "call_transcripts": ("callers", "agents"),
    "performance_ratings": ("agents",), "identification": ("agents", "client_staff"),
    "contact": ("agents", "client_staff"), "credentials": ("agents", "client_staff"),
    "technical_identifiers": ("agents", "client_staff"), "financial": ("callers",),
    "special_category": ("callers",),
}
SUBJECT_KEYS = ("callers", "agents", "client_staff")
_STEP_LINE = re.compile(r"^step (?P<id>\S+) \((?P<action>[a-z_]+\.[a-z_]+)\) (?P<status>completed|skipped|failed)")


def paris_time(value: Any, language: str = "fr") -> str:
    """A time in Europe/Paris with the zone named: « 20/11/2026 à 10 h 14 (heure de Paris) »; '' when unknown."""
    if value in (None, ""):
        return ""
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    local = moment.astimezone(PARIS)
    if language == "fr":
        return f"{local:%d/%m/%Y} à {local.hour} h {local:%M} (heure de Paris)"
    return f"{local.day} {_MONTHS_EN[local.month - 1]} {local.year} at {local:%H:%M} (Paris time)"


def number(value: int | None, language: str = "fr") -> str:
    """48000 as « 48 000 » (fr, narrow no-break space) or '48,000' (en); '' when unknown."""
    if value is None:
        return ""
    text = f"{value:,}"
    return text.replace(",", "\u202f") if language == "fr" else text


def fact_entry(field: str, value: Any, by: str, language: str = "", at: datetime | None = None) -> TimelineEntry:
    """The timeline entry by which a responder states a fact letters may use: the description they confirm, when
    the breach began, the data subjects' categories, the cross-border impact, the root cause in another language
    than the review's. A text is given per `language` (fr, en); a letter uses only a text of its own language."""
    if field not in FACT_FIELDS:
        raise ValueError(f"unknown letter fact {field!r}; valid: {', '.join(FACT_FIELDS)}")
    if not str(by).strip():
        raise ValueError("a letter fact needs the name of who states it (by)")
    return TimelineEntry(at=at or utcnow(), kind=FACT, actor=by, message=f"{field} stated by {by} for the letters",
                         data={"field": field, "value": value, "language": language})


def _stated(incident: Incident, field: str, language: str) -> TimelineEntry | None:
    """The latest statement of `field` in `language` (or given for every language); `language` "": any."""
    entries = [e for e in incident.timeline if e.kind == FACT and e.data.get("field") == field
               and e.data.get("value") not in (None, "", [])
               and (not language or e.data.get("language") in ("", None, language))]
    return max(entries, key=lambda e: e.at) if entries else None


def subjects_of(incident: Incident) -> list[str]:
    """Categories of data subjects (callers, agents, client_staff): a responder's statement, else the data's."""
    stated = _stated(incident, "data_subjects", "")
    if stated is not None:
        value = stated.data["value"]
        items = value if isinstance(value, list) else str(value).split(",")
        return [s.strip() for s in items if s.strip()]
    found: dict[str, None] = {}
    for category in incident.personal_data.categories:
        for key in _SUBJECTS.get(category.value, ()):
            found[key] = None
    return [k for k in SUBJECT_KEYS if k in found]


def role_of(incident: Incident, default: str, for_client: bool = False) -> tuple[Literal["controller", "processor"], bool]:
    """The GDPR role the obligations were decided with (the assessment's timeline entries), else `default`; and
    whether, as processor, Confluent Digital notifies and informs on the Client's behalf (IRP_GDPR_NOTIFY_FOR_CLIENT)."""
    for entry in reversed(incident.timeline):
        role = entry.data.get("gdpr_role") if entry.kind == "obligation" else None
        if role in ("controller", "processor"):
            return role, role == "processor" and bool(entry.data.get("notify_for_client"))
    return ("processor", for_client) if default == "processor" else ("controller", False)


def _steps(incident: Incident, steps: dict[str, Any] | None) -> dict[str, dict[str, Any]]:
    """Containment and restoration steps as they ended: {id: {action, stage, status, at}}, the run's records first."""
    found: dict[str, dict[str, Any]] = {}
    for entry in sorted(incident.timeline, key=lambda e: e.at):
        if entry.kind != "step" or entry.stage not in _MEASURE_STAGES:
            continue
        data = entry.data or {}
        match = _STEP_LINE.match(entry.message)
        action, status = data.get("action"), data.get("status")
        if match and not (action and status):
            action, status = match["action"], match["status"]
        if "(dry run)" in entry.message or data.get("dry_run"):  # nothing was changed
            status = "dry_run"
        if action and status:
            found[entry.step or (match["id"] if match else "")] = {
                "action": action, "stage": entry.stage.value, "status": status, "at": entry.at}
    for sid, record in (steps or {}).items():
        if isinstance(record, dict) and record.get("stage") in [s.value for s in _MEASURE_STAGES] \
                and record.get("phase") in (None, ""):
            found[sid] = {"action": record.get("action", ""), "stage": record["stage"],
                          "status": "dry_run" if record.get("dry_run") else record.get("status", ""),
                          "at": record.get("ended_at")}
    return found


def _measure(item: ActionItem | None, *, step: str, action: str, stage: str, at: Any, language: str,
             state: str) -> dict[str, Any]:
    # own: a person wrote it (the review's corrective actions); a takeover's title is internal (the step's action
    # names it); a playbook measure's title is the wording of last resort, when the letter's texts have none.
    own = item is not None and not item.step
    title = item.title if item is not None and not item.id.startswith("T-") else ""
    moment = at if isinstance(at, datetime) or at is None else datetime.fromisoformat(str(at).replace("Z", "+00:00"))
    return {"state": state, "step": step, "action": action, "stage": stage, "at": paris_time(at, language),
            "when": moment.isoformat() if moment else "",
            "date": _date(at, language), "id": item.id if item else "", "title": title, "own": own,
            "due": _date(item.due_at, language) if item and item.due_at else ""}


def _date(value: Any, language: str) -> str:
    text = paris_time(value, language)
    return text.split(" à ")[0] if language == "fr" else text.split(" at ")[0]


def measures(incident: Incident, steps: dict[str, Any] | None, language: str) -> dict[str, list[dict[str, Any]]]:
    """The measures by their real state: done, in_progress, planned (each with its step, action and time)."""
    out: dict[str, list[dict[str, Any]]] = {"done": [], "in_progress": [], "planned": []}
    ran = _steps(incident, steps)
    for sid, step in ran.items():
        action = str(step["action"])
        if step["status"] != "completed" or not action.startswith(_MEASURE_NAMESPACES) or action.startswith(_READ_ONLY):
            continue
        out["done"].append(_measure(None, step=sid, action=action, stage=step["stage"], at=step["at"],
                                    language=language, state="done"))
    for item in incident.actions:
        if item.stage in _MEASURE_STAGES:
            # A takeover (T-…) is the measure of a step that did not run: its wording is the step's action's.
            action = str(ran.get(item.step, {}).get("action", "")) if item.id.startswith("T-") else "response.assign_action"
            state = "done" if item.status == "closed" else "in_progress"
            out[state].append(_measure(item, step=item.step, action=action, stage=item.stage.value,
                                       at=item.closed_at, language=language, state=state))
        elif item.stage == Stage.review:
            state = "done" if item.status == "closed" else "planned"
            out[state].append(_measure(item, step=item.step, action="", stage="review", at=item.closed_at,
                                       language=language, state=state))
    order = {"contain": 0, "restore": 1, "review": 2}
    out["done"].sort(key=lambda m: (m["when"], m["id"]))  # in the order they were done
    for key in ("in_progress", "planned"):
        out[key].sort(key=lambda m: (order.get(m["stage"], 3), m["id"]))
    return out


def _sent(records: list[NotificationRecord], now: datetime, **match: Any) -> list[NotificationRecord]:
    return [n for n in records if n.status in MET and n.at <= now
            and all(getattr(n, key) in (value if isinstance(value, tuple) else (value,)) for key, value in match.items())]


def letter_facts(
    incident: Incident,
    *,
    language: str,
    phase: str,
    audience: str,
    recipient: str = "",
    steps: dict[str, Any] | None = None,
    default_role: str = "controller",
    for_client: bool = False,
    now: datetime | None = None,
    edits: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Everything a letter may state about `incident`, for the templates' `facts` variable.

    `edits`: the free-text parts (nature, measures, recommendations) a reviewer rewrote (irp/notifications/review.py).

    `default_role` and `for_client` (IRP_GDPR_ROLE, IRP_GDPR_NOTIFY_FOR_CLIENT) apply when the record does not say
    which role its obligations were decided with."""
    now = now or utcnow()
    incident = fold(incident)  # people's decisions applied: measures closed, the review
    records = notifications_of(incident)
    previous = [] if audience == "internal" else _sent(records, now, audience=audience, recipient=recipient)
    last = previous[-1] if previous else None
    kind = "final" if phase == "final" else ("complementary" if phase == "update" or last else "initial")
    description = _stated(incident, "description", language)
    started = _stated(incident, "breach_started_at", "")
    cross_border = _stated(incident, "cross_border", language)
    root_cause = _stated(incident, "root_cause", language)
    pd = incident.personal_data
    to_cnil = _sent(records, now, audience="authority", recipient="cnil")
    to_people = _sent(records, now, audience="data_subjects")
    owed = {o.kind for o in incident.obligations}
    review = incident.review
    role, on_behalf = role_of(incident, default_role, for_client)
    return {
        "language": language,
        "edits": dict(edits or {}),
        "role": role,
        "for_client": on_behalf,
        "phase": kind,
        "previous": {"id": last.id, "at": paris_time(last.at, language), "phase": last.phase,
                     "template": last.template} if last else None,
        "first": {"id": previous[0].id, "at": paris_time(previous[0].at, language)} if previous else None,
        "description": str(description.data["value"]) if description else "",
        "description_by": description.actor if description else "",
        "started": paris_time(started.data["value"], language) if started else "",
        "detected": paris_time(incident.detected_at, language),
        "aware": paris_time(incident.aware_at, language),
        "sent": paris_time(now, language),
        "people": number(pd.approx_people, language),
        "records": number(pd.approx_records, language),
        "subjects": subjects_of(incident) if pd.involved else [],
        "clients": len(incident.affected_clients),
        "measures": measures(incident, steps, language),
        "authority": {"owed": "gdpr_authority" in owed, "sent": paris_time(to_cnil[0].at, language) if to_cnil else "",
                      "id": to_cnil[0].id if to_cnil else ""},
        "art34": {"owed": "data_subjects" in owed, "high_risk": pd.high_risk,
                  "sent": paris_time(to_people[0].at, language) if to_people else ""},
        "review": {"causes": str(root_cause.data["value"]) if root_cause else review.causes, "by": review.by,
                   "at": paris_time(review.at, language)} if review else None,
        "cross_border": str(cross_border.data["value"]) if cross_border else "",
    }
