"""notification.render: the letter it archives rests on the same facts as a sent one."""

from __future__ import annotations

from pathlib import Path

from letter_scenarios import PHASE_AT, SCENARIOS
from service_fixtures import make_ctx

from irp.actions.notification import RenderArgs, render
from irp.models import Stage
from irp.playbook.loader import load_playbook

REPO = Path(__file__).resolve().parents[3]


def test_render_states_the_measures_taken_and_not_the_alert(tmp_path: Path) -> None:
    scenario = SCENARIOS["account_compromise"]
    ctx = make_ctx(tmp_path, action="notification.render", step="draft", stage=Stage.notify,
                   incident=scenario.state(PHASE_AT["initial"]))
    ctx.playbook = load_playbook(REPO / "playbooks" / "account_compromise.yaml").playbook
    out = render(RenderArgs(template="client_notification", audience="client", language="fr"), ctx)
    with ctx.store.open(ctx.incident.id, out["evidence"]) as handle:
        letter = handle.read().decode()
    assert out["subject"].startswith("[Confluent Digital] Violation de données personnelles")
    assert "- Fin de toutes les sessions ouvertes du compte concerné — le 20/11/2026 à 10 h 42" in letter
    assert "suspension du compte" not in letter.lower() and scenario.alert_title not in letter
