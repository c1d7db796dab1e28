"""Notifications (§7, §12, §14): who must be told what by when, the letters, and the channels that carry them.

obligations.py decides the regulatory and contractual notices and their clocks; letters.py renders
a message template; dispatch.py sends it to the configured recipients through channels.py (SMTP,
apprise) and archives both; checks.py is what `irp playbooks validate` checks in the templates.
"""

from irp.notifications.checks import validate_templates
from irp.notifications.dispatch import client_hold, dispatch, outside_context, recipients_for
from irp.notifications.letters import Audience, NotificationError, Rendered, render

__all__ = [
    "Audience",
    "NotificationError",
    "Rendered",
    "client_hold",
    "dispatch",
    "outside_context",
    "recipients_for",
    "render",
    "validate_templates",
]
