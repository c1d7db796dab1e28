"""The alert intake: authenticated webhooks in, deduplicated incident runs out (issue 4, docs/intake.md).

    source ──POST──▶ app (size, auth, schema) ──▶ normalise ──▶ routing ──▶ journal (fsync) ──202──▶ source
                                                                              │
                                                    outbox worker ◀───────────┘
                                                    ├─ run_deployment("<type>/respond", idempotency_key=K)
                                                    ├─ store.append_event(incident, timeline entry)
                                                    └─ GET SubscribeURL (SNS)
"""

from irp.intake.app import create_app, openapi_spec
from irp.intake.routing import Router
from irp.intake.service import IntakeService
from irp.intake.sources import SOURCES

__all__ = ["SOURCES", "IntakeService", "Router", "create_app", "openapi_spec"]
