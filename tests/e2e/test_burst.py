"""A burst of alerts on a real `irp stack` (its Prefect server on SQLite, irp workers, the intake over HTTP):
every incident gets exactly one run and every run reaches its first wait for people (or its end); repeats
during the burst join their incident, in order, none lost or doubled; the backlog drains to nothing.
Functional, not timed: bench/bench_burst.py measures how fast.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from polling import wait_for
from stack_process import irp_stack

from irp.evidence import LocalEvidenceStore

TYPES = ("human_error", "technical_failure", "service_unavailability", "intrusion_attempt", "data_leak")
INCIDENTS = 20
REPEATED = 4  # incidents whose alert comes again twice during the burst


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    """`irp stack` on free ports, with its own Prefect home, evidence and journal; yields (API, intake, evidence)."""
    root = tmp_path_factory.mktemp("burst-stack")
    port, intake_port = free_port(), free_port()
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PREFECT_", "IRP_"))}
    env.update(PREFECT_HOME=str(root / "prefect"), PREFECT_SERVER_ANALYTICS_ENABLED="false",
               IRP_EVIDENCE_URL=f"file://{root / 'evidence'}", IRP_INTAKE_JOURNAL=str(root / "journal.sqlite3"))
    with irp_stack(root, env, "--port", str(port), "--intake-port", str(intake_port)):
        yield f"http://127.0.0.1:{port}/api", f"http://127.0.0.1:{intake_port}", root


def runs_of(api: str) -> list[dict]:
    runs, offset = [], 0
    while True:
        page = httpx.post(f"{api}/flow_runs/filter", timeout=30, json={
            "flow_runs": {"tags": {"all_": ["irp-intake"]}}, "limit": 200, "offset": offset}).json()
        runs += page
        if len(page) < 200:
            return runs
        offset += 200


def test_a_burst_opens_one_run_per_incident_each_reaching_its_first_wait_and_nothing_is_lost(stack) -> None:
    api, intake, root = stack
    bodies = [{"title": f"burst alert {i}", "fingerprint": f"burst-{i}",
               "labels": {"incident_type": TYPES[i % len(TYPES)], "tenant": f"client-{i % 3}", "service": f"svc-{i}"}}
              for i in range(INCIDENTS)]
    repeats = [bodies[i] for _ in (1, 2) for i in range(REPEATED)]
    opened, joined = {}, []
    with httpx.Client(timeout=30) as client:
        for body in bodies[:INCIDENTS // 2] + repeats[:REPEATED] + bodies[INCIDENTS // 2:] + repeats[REPEATED:]:
            answer = client.post(f"{intake}/alerts/generic", json=body)
            assert answer.status_code == 202, answer.text
            [outcome] = answer.json()["alerts"]
            if outcome["outcome"] == "new_incident":
                opened[body["fingerprint"]] = outcome["incident_id"]
            else:
                joined.append((body["fingerprint"], outcome["outcome"], outcome["incident_id"]))
    assert len(opened) == INCIDENTS and len(set(opened.values())) == INCIDENTS
    assert sorted(joined) == sorted((f"burst-{i}", "joined", opened[f"burst-{i}"]) for i in range(REPEATED)
                                    for _ in (1, 2))

    def settled() -> list[dict] | None:
        runs = runs_of(api)
        waiting = [r for r in runs if r["state"]["type"] in ("PAUSED", "COMPLETED")]
        return runs if len(waiting) >= INCIDENTS else None

    runs = wait_for(f"all {INCIDENTS} runs to reach their first wait for people", settled, timeout=420, every=2)
    by_incident: dict[str, list[dict]] = {}
    for run in runs:
        by_incident.setdefault(run["parameters"]["incident_id"], []).append(run)
    assert sorted(by_incident) == sorted(opened.values())  # one run per incident, none for a repeat
    assert all(len(found) == 1 for found in by_incident.values()), {i: len(r) for i, r in by_incident.items()}
    assert not [r["name"] for r in runs if r["state"]["type"] in ("FAILED", "CRASHED")]

    store = LocalEvidenceStore(root / "evidence")

    def repeat_entries(incident_id: str) -> list:
        return [e for e in store.load_incident(incident_id).timeline if e.kind == "alert" and e.data.get("event") == "repeat"]

    wait_for("each repeat in its incident's timeline", lambda: all(
        sum(e.data["count"] for e in repeat_entries(opened[f"burst-{i}"])) == 2 for i in range(REPEATED)),
        timeout=120, every=1)
    for i in range(REPEATED):  # each delivery once, in the order received
        entries = repeat_entries(opened[f"burst-{i}"])
        deliveries = [d for e in entries for d in e.data["deliveries"]]
        assert len(deliveries) == len(set(deliveries)) == 2
        received = [e.data["first_received_at"] for e in entries]
        assert received == sorted(received)

    health = wait_for("the backlog to drain", lambda: (h := httpx.get(f"{intake}/healthz", timeout=10).json())
                      and h["status"] == "ok" and h, timeout=60, every=1)
    metrics = httpx.get(f"{intake}/metrics", timeout=10).text
    assert 'irp_intake_journal_backlog{kind="run"} 0.0' in metrics
    assert health["status"] == "ok"
