"""Notification actions (policy §7, §12, §14): render the notifications the incident calls for and send them.

Side effects: messages sent by email or chat to configured recipients only (irp/notifications/channels.py), each
rendered message and its delivery result archived as evidence, the incident's notifications, timeline
entries, and an escalation to the security team when a delivery fails. With no channel configured a
message is rendered and archived with the result "not sent: no channel configured"; the run goes on.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from irp.actions.registry import ActionArgs, ActionContext, action
from irp.errors import ActionError
from irp.evidence import CollectedBy
from irp.models import NotificationRecord, Obligation, utcnow
from irp.notifications import dispatch
from irp.notifications import render as render_template
from irp.notifications.facts import letter_facts
from irp.notifications.letters import CONTACTS
from irp.notifications.obligations import deadlines
from irp.settings import get_settings

Audience = Literal["client", "authority", "internal", "data_subjects"]
REVIEW_DEPLOYMENT = "review_notification/review"  # prefect.yaml


class RenderArgs(ActionArgs):
    template: str = Field(..., pattern=r"^[a-z0-9_]+$", description="Template name in playbooks/templates/.")
    language: Literal["fr", "en"] = Field("fr", description="Language of the message.")
    audience: Audience = Field(..., description="Who the message is for (§12: only these).")


@action
def render(args: RenderArgs, ctx: ActionContext) -> dict[str, Any]:
    """Render a notification template and archive the message as evidence, without sending it."""
    settings, phase, now = get_settings(), ctx.phase or "initial", utcnow()
    variables = ctx.template_vars()
    rendered = render_template(settings.playbooks_dir / "templates", args.template, args.language,
                               {**variables, "recipient": "", "obligation": None,
                                "notification": {"phase": phase, "late": False, "late_reason": "",
                                                 "due_at": None, "sent_at": now.isoformat()},
                                "contacts": CONTACTS,
                                "facts": letter_facts(ctx.incident, language=args.language, phase=phase,
                                                      audience=args.audience, steps=variables["steps"],
                                                      default_role=settings.gdpr_role,
                                                      for_client=settings.gdpr_notify_for_client, now=now)})
    item = ctx.archive(
        f"notifications/{phase}/{args.template}.{args.language}.md",
        f"Subject: {rendered.subject}\n\n{rendered.text}".encode(),
        content_type="text/markdown; charset=utf-8",
        source_system="irp",
    )
    ctx.record(f"{phase} {args.audience} notification rendered: {rendered.subject}", kind="notification",
               template=args.template, audience=args.audience, evidence=item.name)
    return {"subject": rendered.subject, "evidence": item.name, "audience": args.audience, "phase": phase}


class SendArgs(ActionArgs):
    template: str = Field(..., pattern=r"^[a-z0-9_]+$", description="Template name in playbooks/templates/.")
    audience: Audience = Field(..., description="Who the message is for (§12: only these).")
    language: Literal["fr", "en"] = Field("fr", description="Language of the message.")
    recipient: str = Field(
        "", pattern=r"^[A-Za-z0-9._*-]*$",
        description="Configured recipient key: an authority (cnil, anssi); for client and data_subjects, "
                    "default: each Client of the incident. Addresses come from the settings only.")
    late_reason: str = Field("", max_length=2000, description="Reasons for the delay, when sent after the deadline.")


class SendDueArgs(ActionArgs):
    kinds: list[str] = Field(default_factory=list, description="Only these obligation kinds (default: all).")
    late_reason: str = Field("", max_length=2000, description="Reasons for the delay, for those past their deadline.")


def _collected_by(ctx: ActionContext) -> CollectedBy:
    return CollectedBy(stage=ctx.stage.value, step=ctx.step, action=ctx.action, flow_run_id=ctx.flow_run_id)


def _send(ctx: ActionContext, *, template: str, audience: str, language: str, recipient: str,
          obligation: Obligation | None, late_reason: str) -> NotificationRecord:
    """Dispatch one message from a step; record it on the incident and escalate what failed."""
    settings = get_settings()
    phase = ctx.phase or "initial"
    record = dispatch(ctx.store, ctx.incident, settings, template=template, language=language, audience=audience,
                      recipient=recipient, phase=phase, context=ctx.template_vars(), obligation=obligation,
                      late_reason=late_reason, dry_run=ctx.dry_run, collected_by=_collected_by(ctx),
                      archived=ctx.evidence)
    ctx.update_incident(notifications=[*ctx.incident.notifications, record])
    who = f"{audience} {recipient}".strip()
    due = f" (obligation {obligation.id})" if obligation else ""
    text = {"sent": "sent", "partial": "partly sent", "failed": "NOT sent", "not_sent": "not sent",
            "held": "held, not sent", "dry_run": "rendered (dry run)"}[record.status]
    ctx.record(f"{phase} notification to {who}{due} {text}: {record.subject}"
               + (f" — {record.reason}" if record.reason and record.status != "sent" else ""),
               kind="notification", notification=record.id, template=template, audience=audience,
               status=record.status, evidence=record.evidence)
    if record.status in ("failed", "partial"):
        _escalate(ctx, record, obligation)
    if record.hold:
        _report_hold(ctx, record, obligation)
    return record


def _report_hold(ctx: ActionContext, kept: NotificationRecord, obligation: Obligation | None) -> None:
    """A Client message kept back is on the timeline; the internal recipients hear once per Client and incident.

    One held for review: its reviewers are told, and on a deployment's run a review run waits for them
    with the message on its Resume form (flows/notification_review.py).
    """
    if kept.hold == "review":
        ctx.record(f"{kept.audience} {kept.recipient}: held for its reviewer's approval", kind="notification",
                   notification=kept.id, review_hold=True, obligation=obligation.id if obligation else None)
        if not ctx.dry_run:
            _tell_internal(ctx, kind="review_pending", obligation=obligation, reason=kept.reason)
            if obligation is not None:
                _start_review_run(ctx, obligation)
        return
    reported = {e.data.get("client") for e in [*ctx.incident.timeline, *ctx.timeline] if e.data.get("client_hold")}
    what = ("held until a responder confirms this Client" if kept.hold == "unconfirmed_client"
            else "not a configured Client: reported, never mailed")
    ctx.record(f"{kept.audience} {kept.recipient}: {what}", client=kept.recipient, client_hold=kept.hold,
               kind="escalation" if kept.hold == "unconfirmed_client" else "notification", notification=kept.id,
               obligation=obligation.id if obligation else None)
    if kept.recipient not in reported:
        _tell_internal(ctx, kind=kept.hold, obligation=obligation, reason=kept.reason, client=kept.recipient)


def _start_review_run(ctx: ActionContext, obligation: Obligation) -> None:
    """On the stack, the review waits in its own suspended run, whose Resume form shows the message."""
    from prefect.runtime import deployment

    if not (ctx.flow_run_id and deployment.id):
        return
    from prefect.deployments import run_deployment

    try:
        run_deployment(REVIEW_DEPLOYMENT, timeout=0, as_subflow=False,
                       parameters={"incident_id": ctx.incident.id, "obligation_id": obligation.id},
                       idempotency_key=f"review:{ctx.incident.id}:{obligation.id}",
                       flow_run_name=f"{ctx.incident.id} review {obligation.id}")
    except Exception as exc:  # noqa: BLE001 (the CLI still reviews it; the watch keeps reminding)
        ctx.record(f"review run for {obligation.id} not started ({type(exc).__name__}: {exc}); review it with "
                   f"irp notifications review {ctx.incident.id} {obligation.id}", kind="finding")


def _escalate(ctx: ActionContext, failed: NotificationRecord, obligation: Obligation | None) -> None:
    """A message that did not go is escalated to the security team (§14) and recorded, never dropped."""
    ctx.record(f"notification {failed.id} to {failed.audience} {failed.recipient} not delivered, escalated: "
               f"{failed.reason}", kind="escalation", notification=failed.id,
               obligation=obligation.id if obligation else None)
    if failed.audience == "internal" and failed.template == "internal_escalation":
        return
    _tell_internal(ctx, kind="delivery_failed", obligation=obligation, reason=failed.reason)


def _tell_internal(ctx: ActionContext, *, kind: str, obligation: Obligation | None, reason: str, **extra: Any) -> None:
    """Send the internal escalation message of `kind` (playbooks/templates/internal_escalation.*) to §14's people."""
    record = dispatch(ctx.store, ctx.incident, get_settings(), template="internal_escalation", language="fr",
                      audience="internal", recipient="", phase="escalation", context=ctx.template_vars(),
                      dry_run=ctx.dry_run, collected_by=_collected_by(ctx), archived=ctx.evidence,
                      extra={"escalation": {"kind": kind, "obligation": obligation.model_dump(mode="json")
                                            if obligation else None, "due_at": None, "remaining": "",
                                            "reason": reason, "deadlines": [], **extra}})
    ctx.update_incident(notifications=[*ctx.incident.notifications, record])


def _keys(args: SendArgs, ctx: ActionContext) -> list[str]:
    if args.recipient:
        return [args.recipient]
    if args.audience == "internal":
        return [""]
    if args.audience == "authority":
        raise ValueError("notification.send: audience authority needs recipient (e.g. cnil, anssi)")
    return list(ctx.incident.affected_clients) or (["*"] if args.audience == "data_subjects" else [])


@action
def send(args: SendArgs, ctx: ActionContext) -> dict[str, Any]:
    """Render a template for each configured recipient key, send it, archive it (meets a matching obligation)."""
    try:
        keys = _keys(args, ctx)
    except ValueError as exc:
        raise ActionError(str(exc)) from None
    sent = []
    if not keys:
        ctx.record(f"no {args.audience} to notify: the incident has no affected Client", kind="notification")
    now = utcnow()
    open_ids = {d.obligation.id for d in deadlines(ctx.incident, now) if d.is_open}
    phase = ctx.phase or "initial"
    for key in keys:
        earlier = next((n for n in ctx.incident.notifications if n.template == args.template and n.recipient == key
                        and n.phase == phase and n.audience == args.audience), None)
        if earlier is not None:  # e.g. already sent by notification.send_due in this phase
            sent.append({"id": earlier.id, "recipient": key, "status": earlier.status, "evidence": earlier.evidence,
                         "note": "already handled in this phase"})
            continue
        obligation = next((o for o in ctx.incident.obligations if o.id in open_ids and o.template == args.template
                           and o.recipient == key and o.audience == args.audience), None)
        record = _send(ctx, template=args.template, audience=args.audience, language=args.language,
                       recipient=key, obligation=obligation, late_reason=args.late_reason)
        sent.append({"id": record.id, "recipient": key, "status": record.status, "evidence": record.evidence})
    return {"notifications": sent}


@action
def send_due(args: SendDueArgs, ctx: ActionContext) -> dict[str, Any]:
    """Send every open obligation of this phase (and earlier ones still open): to whom and by when, from analyse."""
    phase = ctx.phase or "initial"
    phases = ("initial",) if phase == "initial" else ("initial", "final")
    sent = []
    for deadline in deadlines(ctx.incident, utcnow()):
        obligation = deadline.obligation
        if not deadline.is_open or obligation.phase not in phases:
            continue
        if args.kinds and obligation.kind not in args.kinds:
            continue
        record = _send(ctx, template=obligation.template, audience=obligation.audience,
                       language=obligation.language, recipient=obligation.recipient, obligation=obligation,
                       late_reason=args.late_reason)
        sent.append({"id": record.id, "obligation": obligation.id, "status": record.status,
                     "evidence": record.evidence})
    if not sent:
        ctx.record(f"{phase} notification: no obligation open", kind="notification")
    return {"notifications": sent}
