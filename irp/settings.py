"""Configuration from IRP_* environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every setting, with its IRP_ variable name and default."""

    model_config = SettingsConfigDict(env_prefix="IRP_", extra="ignore")

    evidence_url: str = Field(
        f"file://{REPO_ROOT / 'var' / 'evidence'}",
        description="Where evidence is archived: file:///path (default: var/evidence in the repo).",
    )
    playbooks_dir: Path = Field(REPO_ROOT / "playbooks", description="Folder holding the playbooks.")

    # Alert intake (irp webhook): see docs/intake.md.
    webhook_token: SecretStr | None = Field(
        None, description="Bearer token(s) the alert sources send; several, comma-separated, during a rotation.")
    webhook_secret: SecretStr | None = Field(
        None, description="Standard Webhooks secret(s) (whsec_...); several, space-separated, during a rotation.")
    webhook_auth: dict[str, str] = Field(
        default_factory=dict,
        description='Per-source methods, JSON: {"generic": "hmac", "grafana": "token,hmac"}; '
                    "methods: token, hmac, pagerduty, sns.")
    pagerduty_secret: SecretStr | None = Field(
        None, description="PagerDuty v3 webhook signing secret(s); several, comma-separated, during a rotation.")
    sns_topic_arns: str = Field("", description="SNS topics accepted at /alerts/sns, comma-separated.")
    sns_host_pattern: str = Field(
        r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$",
        description="Hosts allowed for SNS SigningCertURL and SubscribeURL (regular expression, https only).")
    sns_ca_bundle: Path | None = Field(None, description="CA bundle to fetch SNS certificates with (default: certifi).")
    webhook_max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    dedup_window_seconds: float = Field(
        6 * 3600, gt=0, description="A fingerprint seen again within this time of its last alert joins the incident.")
    intake_journal: Path = Field(
        REPO_ROOT / "var" / "intake" / "journal.sqlite3", description="The intake's SQLite journal (WAL, fsync'd).")
    intake_retry_max_seconds: float = Field(
        30, gt=0, description="Longest wait between two attempts to create a run or append a timeline entry.")
    intake_retention_days: float = Field(30, gt=0, description="How long delivered alerts stay in the journal.")
    routing_file: Path | None = Field(None, description="Alert routing (default: routing.yaml in playbooks_dir).")


@lru_cache
def get_settings() -> Settings:
    """The settings, read once per process (tests clear the cache)."""
    return Settings()
