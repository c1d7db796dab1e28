"""evidence.collect path: only regular files below IRP_EVIDENCE_COLLECT_ROOTS, never kernel files or credentials."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path

import pytest
from service_fixtures import make_ctx

from irp.actions.evidence import CollectArgs, collect
from irp.errors import NotConfiguredError, PermanentError
from irp.settings import get_settings

REPO = Path(__file__).resolve().parents[3]

# A playbook an insider could write: what evidence.collect archived before issue 14.
CRAFTED = """\
name: Fuite de données
incident_type: data_leak
version: 1.0.0
policy_version: "2026-05-13"
owner: security@confluent-digital.com
classification:
  default: major
stages:
  detect:
    - {id: environ, action: evidence.collect, on_failure: continue, args: {name: env.txt, path: /proc/self/environ}}
    - {id: shadow, action: evidence.collect, on_failure: continue, args: {name: shadow.txt, path: /etc/shadow}}
    - {id: gshadow, action: evidence.collect, on_failure: continue, args: {name: gshadow.txt, path: /etc/gshadow}}
    - {id: fd, action: evidence.collect, on_failure: continue, args: {name: fd.txt, path: /dev/fd/0}}
    - {id: key, action: evidence.collect, on_failure: continue, args: {name: key.txt, path: KEY}}
    - {id: ok, action: evidence.collect, on_failure: continue, args: {name: ok.log, path: LOG}}
"""

# Runs every step of the crafted playbook as the engine does (render, validate, call), in a process
# whose environment holds the intake's token like a worker's does; prints each step's error.
RUNNER = """
import json, sys
from pathlib import Path
from irp.playbook.loader import load_playbook
from irp.evidence import LocalEvidenceStore
from irp.models import Alert, Incident, IncidentType, Severity, Stage, utcnow
from irp.actions.registry import ActionContext, get_registry
playbook = load_playbook(Path(sys.argv[1])).playbook
store = LocalEvidenceStore(Path(sys.argv[2]))
incident = Incident(id="INC-TEST-0002", type=IncidentType.data_leak, severity=Severity.major, title="t",
                    detected_at=utcnow())
errors = {}
for stage, _, step in playbook.steps():
    spec = get_registry()[step.action]
    ctx = ActionContext(incident=incident, alert=Alert(title="t"), store=store, stage=stage, step=step.id,
                        action=step.action)
    try:
        spec.fn(spec.args_model.model_validate(step.args), ctx)
        errors[step.id] = None
    except Exception as exc:
        errors[step.id] = f"{type(exc).__name__}: {exc}"
print(json.dumps(errors))
"""


def roots(monkeypatch: pytest.MonkeyPatch, *folders: Path | str) -> None:
    monkeypatch.setenv("IRP_EVIDENCE_COLLECT_ROOTS", ",".join(str(f) for f in folders))
    get_settings.cache_clear()


def files_text(root: Path) -> bytes:
    return b"\n".join(p.read_bytes() for p in root.rglob("*") if p.is_file())


def test_collecting_files_is_disabled_until_roots_are_configured(tmp_path, evidence_root, monkeypatch):
    monkeypatch.delenv("IRP_EVIDENCE_COLLECT_ROOTS", raising=False)
    get_settings.cache_clear()
    (tmp_path / "app.log").write_text("line\n")
    with pytest.raises(NotConfiguredError, match="collecting local files is disabled: IRP_EVIDENCE_COLLECT_ROOTS"):
        collect(CollectArgs(name="app.log", path=tmp_path / "app.log"), make_ctx(evidence_root))
    assert not files_text(evidence_root)


def test_a_file_below_a_root_is_archived_through_a_symlink_inside_it(tmp_path, evidence_root, monkeypatch):
    logs = tmp_path / "logs"
    (logs / "app").mkdir(parents=True)
    (logs / "app" / "app.log").write_text("GET /export 200\n")
    (logs / "current.log").symlink_to(logs / "app" / "app.log")
    roots(monkeypatch, logs)
    out = collect(CollectArgs(name="logs/app.log", path=logs / "current.log"), make_ctx(evidence_root))
    assert out["size"] == len("GET /export 200\n")


def test_the_crafted_playbook_reads_no_kernel_file_nor_credential(tmp_path, evidence_root):
    token = f"whk-{secrets.token_hex(16)}"
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    (home / ".ssh" / "id_ed25519").write_text("-----BEGIN OPENSSH PRIVATE KEY-----\nkey-material\n")
    playbook = tmp_path / "playbooks" / "data_leak.yaml"
    playbook.parent.mkdir()
    (tmp_path / "ok.log").write_text("an ordinary log line\n")
    playbook.write_text(CRAFTED.replace("KEY", str(home / ".ssh" / "id_ed25519")).replace("LOG", str(tmp_path / "ok.log")))
    env = {**os.environ, "IRP_WEBHOOK_TOKEN": token, "IRP_EVIDENCE_COLLECT_ROOTS": "/",  # a root above everything
           "IRP_EVIDENCE_URL": f"file://{evidence_root}", "PYTHONPATH": str(REPO),
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false"}
    done = subprocess.run([sys.executable, "-c", RUNNER, str(playbook), str(evidence_root)], env=env,
                          capture_output=True, text=True, timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    errors = json.loads(done.stdout.splitlines()[-1])
    assert errors.pop("ok") is None  # an ordinary file is collected: the steps really ran
    assert set(errors) == {"environ", "shadow", "gshadow", "fd", "key"}
    for step, error in errors.items():
        assert error is not None and "never collected" in error, (step, error)
    everything = files_text(evidence_root)
    assert b"an ordinary log line" in everything
    assert token.encode() not in everything
    assert b"key-material" not in everything
    if os.access("/etc/shadow", os.R_OK):
        assert Path("/etc/shadow").read_bytes().split(b"\n")[0] not in everything


def test_a_symlink_inside_a_root_pointing_outside_is_refused(tmp_path, evidence_root, monkeypatch):
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (outside / "secret.txt").write_text("outside-secret-contents")
    (root / "innocent.log").symlink_to(outside / "secret.txt")
    (root / "self").symlink_to("/proc/self")
    roots(monkeypatch, root)
    with pytest.raises(PermanentError, match=r"innocent.log \(resolved: .*/outside/secret.txt\) is not below "
                                             r"IRP_EVIDENCE_COLLECT_ROOTS"):
        collect(CollectArgs(name="x.log", path=root / "innocent.log"), make_ctx(evidence_root))
    with pytest.raises(PermanentError, match="kernel, device or credential file: never collected"):
        collect(CollectArgs(name="env", path=root / "self" / "environ"), make_ctx(evidence_root))
    assert b"outside-secret-contents" not in files_text(evidence_root)


def test_a_hard_link_to_shadow_is_refused(tmp_path, evidence_root, monkeypatch):
    link = tmp_path / "shadow-copy"
    try:
        os.link("/etc/shadow", link)
    except OSError:
        pytest.skip("cannot hard-link /etc/shadow here (another file system, or not root)")
    roots(monkeypatch, tmp_path)
    with pytest.raises(PermanentError, match="is /etc/shadow: never collected"):
        collect(CollectArgs(name="x", path=link), make_ctx(evidence_root))


@pytest.mark.timeout(20)
def test_a_fifo_or_a_folder_is_refused_without_waiting(tmp_path, evidence_root, monkeypatch):
    os.mkfifo(tmp_path / "pipe")
    roots(monkeypatch, tmp_path)
    with pytest.raises(PermanentError, match="is not a regular file"):
        collect(CollectArgs(name="x", path=tmp_path / "pipe"), make_ctx(evidence_root))
    with pytest.raises(PermanentError, match="is not a regular file"):
        collect(CollectArgs(name="x", path=tmp_path), make_ctx(evidence_root))


def test_a_relative_path_is_refused(evidence_root, monkeypatch):
    roots(monkeypatch, "/")
    with pytest.raises(PermanentError, match="app.log is not an absolute path"):
        collect(CollectArgs(name="x", path=Path("app.log")), make_ctx(evidence_root))


def test_roots_as_a_json_list(tmp_path, monkeypatch):
    monkeypatch.setenv("IRP_EVIDENCE_COLLECT_ROOTS", json.dumps([str(tmp_path), "/var/log/irp"]))
    get_settings.cache_clear()
    assert get_settings().evidence_collect_roots == [tmp_path, Path("/var/log/irp")]
