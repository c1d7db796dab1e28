"""The intake's journal: every accepted delivery, the dedup state and the outbox, durably recorded.

An alert is acknowledged only after the transaction that records it is committed and fsync'd.
In the same transaction the dedup decision is taken and the work it implies is queued in the
outbox: create a run (new incident), append a timeline entry (repeat, resolved, update) or confirm
an SNS subscription. The outbox worker (irp.intake.outbox) carries the work out, with retries.

`Journal` holds the logic, in SQL both databases run: the dedup decision is one upsert on the
alert's group, so it is atomic however many intakes share the database. It commits in groups: one
writer thread takes every queued operation, runs each in a savepoint and commits them together, so
concurrent requests share one fsync. Two backends:

- `SQLiteJournal`: one file (WAL, synchronous=FULL), owned by one intake process (a lock file
  says so to a second one);
- `PostgresJournal`: one database shared by several intake replicas. Each transaction first takes
  transaction-level advisory locks on the groups it touches, in a fixed order, so replicas never
  deadlock; outbox items are leased (`FOR UPDATE SKIP LOCKED`), so each is carried out by one
  replica, and the items of a replica that died are taken over when their lease expires.
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
