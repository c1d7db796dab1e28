"""Configuration from IRP_* environment variables (pydantic-settings)."""

from __future__ import annotations

import ipaddress
import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from irp.models import DataCategory, Severity, TargetKind
from irp.text import split_list

REPO_ROOT = Path(__file__).resolve().parent.parent


class TargetRule(BaseModel):
    """IRP_ACTION_TARGETS for one target kind or one action: what may be changed without approval, and what never."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(default_factory=list, description="Targets alert data may choose (glob or CIDR).")
    deny: list[str] = Field(default_factory=list, description="Protected targets, never changed automatically.")


class Settings(BaseSettings):
    """Every setting, with its IRP_ variable name and default."""

    model_config = SettingsConfigDict(env_prefix="IRP_", extra="ignore")

    evidence_url: str = Field(
        f"file://{REPO_ROOT / 'var' / 'evidence'}",
        description="Where evidence is archived: file:///path (default: var/evidence in the repo) or s3://bucket/prefix.",
    )
    playbooks_dir: Path = Field(REPO_ROOT / "playbooks", description="Folder holding the playbooks.")

    # Evidence store (irp/evidence/): retention, encryption, exports and the spool for S3 outages.
    evidence_retention_mode: str = Field(
        "GOVERNANCE", description="Object Lock mode for evidence: GOVERNANCE, COMPLIANCE or off.")
    evidence_retention_days: dict[str, int] = Field(
        default_factory=lambda: {"critical": 2190, "major": 1095, "minor": 365},
        description='Retention per severity, JSON: {"critical": 2190, "major": 1095, "minor": 365}; '
                    "an unknown severity gets the longest.")
    evidence_sse: str = Field("AES256", description="Encryption at rest: AES256 (SSE-S3), aws:kms (SSE-KMS) or off.")
    evidence_kms_key_id: str = Field("", description="KMS key id or ARN for aws:kms (default: the bucket's key).")
    evidence_presign_expiry_seconds: int = Field(
        900, description="Lifetime of presigned export URLs, and the longest `irp evidence export --expires` allows.")
    evidence_spool_dir: Path = Field(
        REPO_ROOT / "var" / "spool", description="Where evidence waits while the S3 store is unreachable.")
    evidence_part_size_mb: int = Field(8, description="Multipart upload part size in MiB (5 or more).")
    evidence_upload_concurrency: int = Field(4, description="Parts uploaded in parallel (memory: about this + 1 parts).")
    evidence_collect_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="Folders evidence.collect may read files from (path:), JSON list or comma-separated; empty: "
                    "collecting local files is disabled. Never /proc, /sys, /dev nor credentials (/etc/shadow, "
                    "SSH keys...), even below a root.")

    # Anchors and trusted timestamps (irp/evidence/anchors.py, timestamps.py): see docs/evidence.md.
    evidence_anchor_url: str = Field(
        "", description="Where checkpoints of every chain head are written, outside the store: file:///path/anchors.jsonl "
                        "(append-only file) or s3://bucket/prefix (Object Lock COMPLIANCE bucket); empty: anchors.jsonl "
                        "beside a local store's folder, none for an s3:// store.")
    evidence_anchor_endpoint_url: str = Field("", description="S3 endpoint of the anchor bucket (default: AWS).")
    evidence_anchor_access_key_id: str = Field(
        "", description="Access key of the anchor bucket, separate from the store's (default: the AWS credential chain).")
    evidence_anchor_secret_access_key: SecretStr | None = Field(None, description="Secret key of the anchor bucket.")
    evidence_anchor_retention_days: int = Field(
        2190, ge=1, description="COMPLIANCE retention of each checkpoint in the anchor bucket, in days.")
    evidence_anchor_interval_seconds: int = Field(
        300, ge=0, description="How often `irp worker` writes a checkpoint (besides each stage end); 0: only at stage ends.")
    tsa_url: str = Field("", description="RFC 3161 time-stamping authority timestamping each checkpoint; empty: none.")
    tsa_certificates: Path | None = Field(
        None, description="PEM file with the TSA's root (and intermediate) certificates, to verify its tokens.")

    # Audit, metrics and reports (irp/reports/kpis.py, irp/audit.py, irp report): see docs/audit.md.
    response_targets_minutes: dict[str, dict] = Field(
        default_factory=dict,
        description='Response targets in minutes per severity, JSON: {"critical": {"acknowledge": 15, '
                    '"contain": 240, "restore": 1440, "notify": 1440}}; what is not given keeps its default '
                    "(docs/audit.md).")
    reports_dir: Path = Field(REPO_ROOT / "var" / "reports", description="Where `irp report monthly` writes its HTML.")

    # Alert intake (irp webhook): see docs/intake.md.
    webhook_token: SecretStr | None = Field(
        None, description="Bearer token(s) the alert sources send; several, comma-separated, during a rotation.")
    webhook_secret: SecretStr | None = Field(
        None, description="Standard Webhooks secret(s) (whsec_...); several, space-separated, during a rotation.")
    webhook_auth: dict[str, str] = Field(
        default_factory=dict,
        description='Per-source methods, JSON: {"generic": "hmac", "grafana": "token,hmac"}; '
                    "methods: token, hmac, pagerduty, sns, apikey.")
    pagerduty_secret: SecretStr | None = Field(
        None, description="PagerDuty v3 webhook signing secret(s); several, comma-separated, during a rotation.")
    sns_topic_arns: str = Field("", description="SNS topics accepted at /alerts/sns, comma-separated.")
    sns_host_pattern: str = Field(
        r"^sns\.[a-z0-9-]+\.amazonaws\.com(\.cn)?$",
        description="Hosts allowed for SNS SigningCertURL and SubscribeURL (regular expression, https only).")
    sns_ca_bundle: Path | None = Field(None, description="CA bundle to fetch SNS certificates with (default: certifi).")
    eventbridge_api_key_header: str = Field(
        "x-irp-api-key", pattern=r"^[A-Za-z0-9-]{1,64}$",
        description="Header an EventBridge connection (API key authorization) sends at /alerts/eventbridge.")
    eventbridge_api_key: SecretStr | None = Field(
        None, description="Value(s) of that header accepted at /alerts/eventbridge; several, comma-separated, during a "
                          "rotation. Basic auth and bearer are checked against IRP_WEBHOOK_TOKEN.")
    vocabulary_synonyms: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description='Words sources use for the playbooks\' vocabulary, JSON: {"data_categories": {"pii": '
                    '"identification"}, "severity": {"sev1": "critical"}}; added to the shipped ones (irp/vocabulary.py). '
                    "Unknown values are kept as unclassified, never refused.")
    webhook_max_body_bytes: int = Field(1024 * 1024, ge=1024, description="Largest request body accepted (413 above).")
    webhook_max_header_bytes: int = Field(
        16 * 1024, ge=1024, description="Largest request line and headers, together (431 above; the rest is not parsed).")
    webhook_header_timeout_seconds: float = Field(
        5, gt=0, description="Time a client has to send a request's line and headers, from its connection or "
                             "first byte; then 408 and the connection is closed (slow-header attacks).")
    webhook_body_timeout_seconds: float = Field(
        10, gt=0, description="Time a client has to send a request's body once its headers are in; then 408 and the "
                              "connection is closed (stalled bodies).")
    webhook_max_connections: int = Field(
        512, ge=1, description="Open connections the intake keeps; one more is answered 503 at once and closed.")
    webhook_max_unverified_bytes: int = Field(
        32 * 1024 * 1024, ge=1024,
        description="Body bytes held at once, all requests together, before their signature can be checked "
                    "(Standard Webhooks, PagerDuty, SNS: the check needs the body); over it 503 with Retry-After. "
                    "Bearer-token requests are checked before their body is read and do not count.")
    dedup_window_seconds: float = Field(
        6 * 3600, gt=0, description="A fingerprint seen again within this time of its last alert joins the incident.")
    intake_journal: str = Field(
        str(REPO_ROOT / "var" / "intake" / "journal.sqlite3"),
        description="The intake's journal: a SQLite file (WAL, fsync'd; one intake process), or "
                    "postgresql://user@host/db shared by several intake replicas (password in PGPASSWORD or ~/.pgpass).")
    intake_lease_seconds: float = Field(
        30, gt=0, description="How long an outbox item one intake replica took is left to it; then (the replica "
                              "died) another one carries it out.")
    intake_retry_max_seconds: float = Field(
        30, gt=0, description="Longest wait between two attempts to create a run or append a timeline entry.")
    intake_retention_days: float = Field(30, gt=0, description="How long delivered alerts stay in the journal.")
    worker_max_runs: int = Field(
        64, ge=1, le=256, description="Runs one `irp worker` executes at once (threads of one process); `irp stack` "
                                      "starts one worker per CPU core. A run waiting for people holds none.")
    worker_active_stages: int = Field(
        4, ge=0, le=256, description="Stages one process runs at once (0: no limit); a freed place goes to the "
                                     "earliest stage of the policy waiting (a new incident's detect first), then to "
                                     "the incident that came first. Waiting for people holds no place.")
    intake_backlog_max_age_seconds: float = Field(
        120, gt=0, description="/healthz turns degraded once an accepted alert's run has waited this long to be "
                               "created (outbox) or started by a worker (work pool).")
    routing_file: Path | None = Field(None, description="Alert routing (default: routing.yaml in playbooks_dir).")
    routing_reload_seconds: float = Field(
        2.0, ge=0, description="How often the intake checks the routing file for changes (0: only on SIGHUP).")
    triage_severities: Annotated[list[Severity], NoDecode] = Field(
        default_factory=lambda: [Severity.critical],
        description="Severities (§5 words, after the vocabulary: a source's high is critical) at which an alert no "
                    "route matches opens a triage incident at once and tells IRP_NOTIFY_INTERNAL (comma-separated; "
                    "empty: unrouted alerts are only listed).")
    triage_timeout_hours: float = Field(
        24, gt=0, le=720, description="How long a triage run waits for a responder to choose the incident type; "
                                      "then it escalates to the internal recipients and ends, the alert still listed.")

    # Containment and restore actions (irp/actions/aws/, irp/actions/platform.py): how they reach third parties.
    action_attempts: int = Field(4, ge=1, le=10, description="Attempts per provider call (throttling, 5xx, timeouts).")
    action_retry_base_seconds: float = Field(0.5, ge=0, description="First backoff delay; doubles, full jitter.")
    action_retry_max_seconds: float = Field(10, ge=0, description="Longest single backoff delay.")
    action_timeout_seconds: float = Field(15, gt=0, description="Connect and read timeout of one provider request.")
    action_deadline_seconds: float = Field(120, gt=0, description="No new attempt starts after this long.")
    aws_region: str | None = Field(None, description="AWS region; default: the standard chain (AWS_REGION...).")
    aws_credentials_block: str | None = Field(
        None, description="Name of a prefect-aws AwsCredentials block; default: the standard AWS credential chain."
    )
    aws_isolation_security_group: str | None = Field(
        None, description="Isolation security group for quarantine: an sg- id, or a group name found in the VPC."
    )
    aws_waf_ip_set_arn: str | None = Field(None, description="ARN of the WAFv2 IP set aws.block_ip adds to.")
    aws_waf_web_acl_arn: str | None = Field(
        None, description="ARN of the WAFv2 web ACL aws.add_rate_limit_rule adds rate-based rules to.")
    aws_trusted_accounts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, description="AWS account ids (comma-separated) besides this one that roles may trust "
                                          "without aws.list_persistence reporting them.")
    aws_network_acl_id: str | None = Field(None, description="Network ACL aws.block_ip adds deny rules to.")
    aws_owner_tag: str = Field("owner", min_length=1, description="Tag key (any case) that names a resource's owner "
                               "in the facts aws.describe_* return.")
    aws_tenant_tag: str = Field("tenant", min_length=1, description="Tag key (any case) that names the Client a "
                                "resource belongs to, in the facts aws.describe_* return.")
    aws_classification_tag: str = Field("data-classification", min_length=1, description="Tag key (any case) of a "
                                        "bucket's data classification, in the facts aws.describe_bucket returns.")
    platform_api_url: str | None = Field(
        None, description="Base URL of the CallCenterRate admin API, e.g. https://admin.example/admin/v1."
    )
    platform_token_block: str = Field(
        "irp-platform-admin-token", description="Prefect Secret block holding the admin API token."
    )
    action_targets: dict[str, TargetRule] = Field(
        default_factory=dict,
        description='What an action may change when alert data chose it, per target kind or per action, JSON: '
                    '{"iam_user": {"allow": ["svc-*"], "deny": ["break-glass-admin"]}, "cidr": {"allow": '
                    '["0.0.0.0/0"], "deny": ["10.0.0.0/8"]}}; glob patterns, CIDR ranges for cidr. A target alert '
                    'data chose and no allow matches waits for an approval; a denied one is never changed '
                    '(docs/security.md).')
    http_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Hosts http.request may call (JSON list or comma-separated), besides those of IRP_HTTP_ENDPOINTS "
                    "and IRP_HTTP_SECRET_HOSTS; empty: any host whose addresses are all public. A host named in "
                    "these settings may resolve to internal addresses (loopback, private); cloud metadata "
                    "addresses are always refused (docs/platform-api.md).",
    )
    http_endpoints: dict[str, str] = Field(
        default_factory=dict,
        description='URLs http.request calls by name (endpoint: NAME), JSON: {"status_page": '
                    '"https://api.statuspage.io/v1/pages/PAGE/incidents"}; alert data never gives a URL.')
    http_secret_hosts: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Hosts each Prefect Secret block may be sent to by http.request (auth_block), JSON: '
                    '{"irp-status-page-token": ["api.statuspage.io"]}; a block not listed is sent nowhere.')

    # Notifications and regulatory clocks (irp/actions/notification.py, irp/notifications/): docs/notifications.md.
    smtp_url: SecretStr | None = Field(
        None, description="Mail server: smtp+starttls://user:pass@host:587, smtps://user:pass@host:465 or "
                          "smtp://host:25 (no TLS: loopback only); unset: messages are archived, not sent.")
    smtp_from: str = Field("security@confluent-digital.com", description="Sender address of notifications (§14).")
    smtp_ca_bundle: Path | None = Field(None, description="CA bundle to verify the mail server (default: system CAs).")
    notify_internal: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["security@confluent-digital.com", "dpo@confluent-digital.com"],
        description="Internal recipients (§14), and who deadline escalations go to: addresses or apprise URLs "
                    "(slack://, msteams://, json://…), JSON list or comma-separated.")
    notify_clients: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Recipients per Client, JSON: {"acme-callcenter": ["dpo@acme.example"]}; '
                    "the key is the Client id of the incident (affected_clients).")
    notify_authorities: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Recipients per authority, JSON: {"cnil": ["..."], "anssi": ["..."]} '
                    "(often the DPO who files on the authority's online service).")
    notify_data_subjects: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Who relays Art. 34 communications to the people concerned, per Client or "*", JSON.')
    notify_review: dict[str, list[str]] = Field(
        default_factory=lambda: {a: ["dpo@confluent-digital.com"] for a in ("authority", "client", "data_subjects")},
        description='Who reviews a message before it leaves, per audience (authority, client, data_subjects), JSON: '
                    '{"authority": ["dpo@…"]}. A message to a listed audience is held until one of them approves it '
                    '(irp notifications approve, or its Resume form); {} sends without review. Internal messages are '
                    'never held.')
    notify_allowlist: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: ["confluent-digital.com"],
        description="Where messages may go: addresses, domains (also their subdomains) and URL prefixes "
                    "(e.g. slack://, json://127.0.0.1:8080/); nothing is sent anywhere else.")
    notify_attempts: int = Field(4, ge=1, le=10, description="Attempts per recipient before the failure is escalated.")
    notify_retry_base_seconds: float = Field(1.0, ge=0, description="First wait between attempts; doubles each time.")
    notify_retry_max_seconds: float = Field(30.0, ge=0, description="Longest wait between two attempts.")
    notify_timeout_seconds: float = Field(15.0, gt=0, description="Connect and read timeout of one delivery.")
    client_notice_hours: float = Field(
        24, gt=0, description="Deadline for telling a Client, from awareness (§7 \"dans les meilleurs délais\").")
    gdpr_role: str = Field(
        "controller", description="Confluent Digital's GDPR role for the data of an incident when the playbook "
                                  "does not say: controller (notifies CNIL, Art. 33) or processor (tells the "
                                  "Client, who notifies; Art. 33(2)).")
    gdpr_notify_for_client: bool = Field(
        False, description="When Confluent Digital is processor: the Clients instructed it to notify the CNIL "
                           "(Art. 33) and to inform the people (Art. 34) on their behalf; the letters say so. "
                           "Off: the Client, controller, does both and irp tells and assists it (Art. 28(3)(f)).")
    # Approval gates (irp/engine/approval.py, irp/approval_links.py, the intake's /approvals/): docs/approvals.md.
    approvers: dict[str, list[str]] = Field(
        default_factory=dict,
        description='Approver groups (a step\'s approval: group), JSON: {"oncall": ["alice@confluent-digital.com", '
                    '"Bob <slack://T/B/C>"]}; each member an address or an apprise URL, optionally "Name <...>". '
                    "Members are paged with personal signed links when a step waits (IRP_APPROVAL_SECRET).")
    approval_secret: SecretStr | None = Field(
        None, description="Secret (32+ characters) that signs approval links; unset: nobody is paged and only the "
                          "Prefect UI's (unverified) form decides. Generate one: "
                          "python -c 'import secrets; print(secrets.token_urlsafe(32))'.")
    approval_base_url: str = Field(
        "http://127.0.0.1:8765", description="The intake's address as approvers reach it (their links point there), "
                                             "e.g. https://irp.confluent-digital.com.")
    approval_reminder_minutes: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [10.0],
        description="Reminders to the approvers who have not decided this long before an approval times out "
                    "(comma-separated minutes); at the timeout the step's escalate_to group is paged.")
    approval_escalation_minutes: float = Field(
        15, gt=0, description="How long the escalate_to group of a step has to decide once it is paged at the "
                              "timeout, before on_timeout applies.")
    reminder_lead_hours: Annotated[list[float], NoDecode] = Field(
        default_factory=lambda: [24.0, 6.0, 1.0],
        description="Reminders to the internal recipients this long before each open deadline (comma-separated).")
    escalation_lead_hours: float = Field(
        2, ge=0, description="Escalate to security@ and dpo@ when an open deadline is this near, and when missed.")

    @field_validator("notify_internal", "notify_allowlist", "evidence_collect_roots", "aws_trusted_accounts",
                     "triage_severities", mode="before")
    @classmethod
    def _text_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return split_list(text)
        return value

    @field_validator("aws_trusted_accounts")
    @classmethod
    def _accounts(cls, accounts: list[str]) -> list[str]:
        bad = [a for a in accounts if not re.fullmatch(r"[0-9]{12}", a)]
        if bad:
            raise ValueError(f"{', '.join(bad)}: not AWS account ids (12 digits)")
        return accounts

    @field_validator("reminder_lead_hours", "approval_reminder_minutes", mode="before")
    @classmethod
    def _hours(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            return json.loads(text) if text.startswith("[") else [float(v) for v in split_list(text)]
        return value

    @field_validator("approvers")
    @classmethod
    def _approver_groups(cls, groups: dict[str, list[str]]) -> dict[str, list[str]]:
        for group, members in groups.items():
            if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,62}", group):
                raise ValueError(f"group {group!r}: use lower-case letters, digits, '_' and '-'")
            if not members:
                raise ValueError(f"group {group!r} has no member")
            for member in members:
                target = member_target(member)
                if not (re.fullmatch(r"[^@\s<>]+@[^@\s<>]+\.[^@\s<>]+", target) or re.match(r"^[a-z][a-z0-9+.-]*://", target)):
                    raise ValueError(f"group {group!r}: {member!r} is neither an e-mail address nor an apprise URL "
                                     "(slack://, msteams://, json://...), optionally as \"Name <address-or-url>\"")
                if "://" in target and member_name(member) == target:
                    raise ValueError(f"group {group!r}: an apprise URL member needs a name, \"Bob <slack://...>\" "
                                     "(the URL holds a secret and is never shown)")
        return groups

    @field_validator("approval_base_url")
    @classmethod
    def _base_url(cls, url: str) -> str:
        from urllib.parse import urlsplit

        if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
            raise ValueError(f"{url!r} is not an http(s) URL, e.g. https://irp.confluent-digital.com")
        return url

    @field_validator("approval_secret")
    @classmethod
    def _long_secret(cls, secret: SecretStr | None) -> SecretStr | None:
        if secret is not None and len(secret.get_secret_value()) < 32:
            raise ValueError("too short: 32 characters or more, e.g. python -c 'import secrets; "
                             "print(secrets.token_urlsafe(32))'")
        return secret

    @field_validator("action_targets")
    @classmethod
    def _target_rules(cls, rules: dict[str, TargetRule]) -> dict[str, TargetRule]:
        for key, rule in rules.items():
            if key not in TargetKind.__members__ and not re.fullmatch(r"[a-z_]+\.[a-z_]+", key):
                raise ValueError(f"{key!r} is neither a target kind ({', '.join(TargetKind)}) nor an action name "
                                 "like platform.reset_password")
            if key == TargetKind.cidr:
                for pattern in [*rule.allow, *rule.deny]:
                    try:
                        ipaddress.ip_network(pattern, strict=False)
                    except ValueError:
                        raise ValueError(f"cidr: {pattern!r} is not an IP address or CIDR range") from None
        return rules

    @field_validator("http_allowed_hosts", mode="before")
    @classmethod
    def _host_list(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                return json.loads(text)
            return [host.lower() for host in split_list(text)]
        return value

    @field_validator("http_endpoints")
    @classmethod
    def _endpoint_urls(cls, value: dict[str, str]) -> dict[str, str]:
        from urllib.parse import urlsplit

        for name, url in value.items():
            if urlsplit(url).scheme not in ("http", "https") or not urlsplit(url).hostname:
                raise ValueError(f"endpoint {name!r}: {url!r} is not an http(s) URL")
        return value

    @field_validator("vocabulary_synonyms")
    @classmethod
    def _vocabulary_words(cls, value: dict[str, dict[str, str]]) -> dict[str, dict[str, str]]:
        words = {"data_categories": [c.value for c in DataCategory], "severity": [s.value for s in Severity]}
        for kind, table in value.items():
            if kind not in words:
                raise ValueError(f"unknown vocabulary {kind!r}; valid: {', '.join(words)}")
            for synonym, word in table.items():
                if word not in words[kind]:
                    raise ValueError(f"{kind}: {synonym!r} -> {word!r}, not a word of the vocabulary; "
                                     f"valid: {', '.join(words[kind])}")
        return value


def member_target(member: str) -> str:
    """Where an IRP_APPROVERS member is paged: the address or URL, without its optional "Name <...>"."""
    found = re.fullmatch(r"\s*(.*?)\s*<(.+)>\s*", member)
    return found.group(2).strip() if found else member.strip()


def member_name(member: str) -> str:
    """Who an IRP_APPROVERS member is, as records show it: the name given, else the address or URL."""
    found = re.fullmatch(r"\s*(.*?)\s*<(.+)>\s*", member)
    return (found.group(1) or found.group(2)).strip() if found else member.strip()


@lru_cache
def get_settings() -> Settings:
    """The settings, read once per process (tests clear the cache)."""
    return Settings()
