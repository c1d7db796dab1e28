"""The intake's journal: every accepted delivery, the dedup state and the outbox, durably recorded.

An alert is acknowledged only after the transaction that records it is committed and fsync'd.
In the same transaction the dedup decision is taken and the work it implies is queued in the
outbox: create a run (new incident), append a timeline entry (repeat, resolved, update) or confirm
an SNS subscription. The outbox worker (irp.intake.outbox) carries the work out, with retries.

`AlertJournal` (dedup.py) holds the logic, in SQL both databases run; writer.py commits in groups,
outbox_table.py leases and finishes the outbox's items, databases.py has the two backends:
`SQLiteJournal` (one file, one intake process) and `PostgresJournal` (shared by replicas).
"""

from irp.intake.journal.databases import PostgresJournal, SQLiteJournal, open_journal
from irp.intake.journal.dedup import AlertJournal
from irp.intake.journal.outbox_table import LEASE_SECONDS
from irp.intake.journal.records import (
    AcceptResult,
    AlertDecision,
    AlertDelivery,
    JournalError,
    OutboxItem,
    idempotency_key,
    new_delivery_id,
)

__all__ = [
    "LEASE_SECONDS",
    "AcceptResult",
    "AlertDecision",
    "AlertDelivery",
    "AlertJournal",
    "JournalError",
    "OutboxItem",
    "PostgresJournal",
    "SQLiteJournal",
    "idempotency_key",
    "new_delivery_id",
    "open_journal",
]
