"""Secrets Manager: rotate a secret (its rotation function, or a new random value) and roll it back.

Side effects, not in dry runs: a new AWSCURRENT version (the previous one kept as AWSPREVIOUS), or
an earlier version made current again. Secret values are never logged, returned or archived.
"""

from __future__ import annotations

import json
import uuid
from typing import Annotated, Any, Literal

from pydantic import Field

from irp.actions.aws.clients import aws_client, call
from irp.actions.base import Change, Journal, Outcome, UndoPlan, run_change
from irp.actions.registry import ActionArgs, ActionContext, Target, action
from irp.errors import PermanentError


class RotateSecretArgs(ActionArgs):
    secret_id: Annotated[str, Target("secret")] = Field(..., min_length=1, description="Secret name or ARN.")
    mode: Literal["auto", "rotation_function", "new_value"] = Field(
        "auto", description="rotation_function: RotateSecret (needs one); new_value: a random value put as current; "
                            "auto: the function when configured, else a new value.")
    json_key: str | None = Field(None, description="new_value on a JSON secret: the key whose value is replaced.")
    length: int = Field(40, ge=16, le=4096, description="new_value: length of the generated value.")
    exclude_punctuation: bool = Field(False, description="new_value: letters and digits only.")


def _secret_state(ctx: ActionContext, sm: Any, secret_id: str) -> dict[str, Any]:
    found = call(ctx, sm, "describe_secret", absent=("ResourceNotFoundException",), SecretId=secret_id)
    if found is None:
        raise PermanentError(f"no secret {secret_id!r} in Secrets Manager", provider="AWS secretsmanager",
                             code="ResourceNotFoundException")
    stages = found.get("VersionIdsToStages", {})
    current = next((v for v, s in stages.items() if "AWSCURRENT" in s), None)
    previous = next((v for v, s in stages.items() if "AWSPREVIOUS" in s), None)
    return {"arn": found["ARN"], "name": found["Name"], "rotation_function": found.get("RotationLambdaARN"),
            "rotation_enabled": bool(found.get("RotationEnabled")), "current_version": current,
            "previous_version": previous, "versions": stages}


@action
def rotate_secret(args: RotateSecretArgs, ctx: ActionContext) -> Outcome:
    """Rotate a Secrets Manager secret (its rotation function, or a new random value); values never recorded."""
    sm = aws_client("secretsmanager")
    current = _secret_state(ctx, sm, args.secret_id)
    journal, before, _ = Journal.begin(ctx, f"secret/{current['name']}", current, source_system="aws-secretsmanager")
    token = str(uuid.uuid5(uuid.NAMESPACE_URL, f"irp:{ctx.incident.id}:{ctx.stage.value}:{ctx.step}:{current['arn']}"))
    mode = args.mode
    if mode == "auto":
        mode = "rotation_function" if current["rotation_function"] else "new_value"
    if mode == "rotation_function" and not current["rotation_function"]:
        raise PermanentError(f"secret {current['name']} has no rotation function: use mode new_value",
                             provider="AWS secretsmanager", code="InvalidRequestException")
    undo = None
    if before["current_version"]:
        undo = UndoPlan(action="aws.restore_secret_version", args={
            "secret_id": current["arn"], "version_id": before["current_version"], "rotated_version_id": token})
    done = "AWSCURRENT" in current["versions"].get(token, [])

    def checks() -> list[str]:
        found = ["secretsmanager:DescribeSecret: secret found (Secrets Manager has no DryRun)"]
        if mode == "new_value" and args.json_key:
            value = call(ctx, sm, "get_secret_value", SecretId=args.secret_id)
            _replace_key(value.get("SecretString"), args.json_key, "x")  # checks the shape, value discarded
            found.append(f"secretsmanager:GetSecretValue: JSON key {args.json_key!r} present")
        return found

    def write() -> dict[str, Any]:
        if mode == "rotation_function":
            call(ctx, sm, "rotate_secret", SecretId=current["arn"], ClientRequestToken=token, RotateImmediately=True)
        else:
            generated = call(ctx, sm, "get_random_password", PasswordLength=args.length,
                             ExcludePunctuation=args.exclude_punctuation)["RandomPassword"]
            if args.json_key:
                old = call(ctx, sm, "get_secret_value", SecretId=current["arn"]).get("SecretString")
                value = _replace_key(old, args.json_key, generated)
            else:
                value = generated
            call(ctx, sm, "put_secret_value", SecretId=current["arn"], ClientRequestToken=token, SecretString=value,
                 VersionStages=["AWSCURRENT"])
            del generated, value
        return _secret_state(ctx, sm, current["arn"])

    warning = ("a new value only in Secrets Manager does not change the credential at its service: restart or "
               "reconfigure its consumers" if mode == "new_value" else "")
    return run_change(ctx, Change(
        journal=journal, source_system="aws-secretsmanager", before=before, done=done, write=write,
        current=current, undo=undo, checks=checks,
        dry_run=f"dry run: would rotate secret {current['name']} ({mode})" + (" (already done)" if done else ""),
        unchanged=f"secret {current['name']} was already rotated by this step (version {token}): nothing changed",
        changed=lambda after: f"secret {current['name']} rotated ({mode}): version {after['current_version']} is "
                              f"current, {before['current_version']} previous",
        dry_details={"mode": mode}, changed_details={"mode": mode, "warning": warning},
    ))


def _replace_key(secret_string: str | None, key: str, value: str) -> str:
    try:
        document = json.loads(secret_string or "")
    except ValueError:
        raise PermanentError("the secret is not a JSON document: drop json_key to replace the whole value",
                             provider="AWS secretsmanager", code="NotJson") from None
    if not isinstance(document, dict) or key not in document:
        keys = ", ".join(sorted(document)) if isinstance(document, dict) else "none"
        raise PermanentError(f"the secret has no key {key!r}; its keys: {keys}", provider="AWS secretsmanager",
                             code="NoSuchKey")
    document[key] = value
    return json.dumps(document)


class SecretVersionArgs(ActionArgs):
    secret_id: Annotated[str, Target("secret")] = Field(..., min_length=1, description="Secret name or ARN.")
    version_id: str = Field(..., min_length=1, description="The version to make AWSCURRENT again.")
    rotated_version_id: str | None = Field(None, description="The version the rotation made current (informative).")


@action
def restore_secret_version(args: SecretVersionArgs, ctx: ActionContext) -> Outcome:
    """Make an earlier secret version current again (undo of aws.rotate_secret)."""
    sm = aws_client("secretsmanager")
    current = _secret_state(ctx, sm, args.secret_id)
    journal, before, _ = Journal.begin(ctx, f"secret/{current['name']}", current, source_system="aws-secretsmanager")
    if args.version_id not in current["versions"]:
        raise PermanentError(f"secret {current['name']} has no version {args.version_id} any more",
                             provider="AWS secretsmanager", code="ResourceNotFoundException")
    done = current["current_version"] == args.version_id

    def write() -> dict[str, Any]:
        call(ctx, sm, "update_secret_version_stage", SecretId=current["arn"], VersionStage="AWSCURRENT",
             MoveToVersionId=args.version_id, RemoveFromVersionId=current["current_version"])
        return _secret_state(ctx, sm, current["arn"])

    return run_change(ctx, Change(
        journal=journal, source_system="aws-secretsmanager", before=before, done=done, write=write, current=current,
        dry_run=f"dry run: would make version {args.version_id} of {current['name']} current"
                + (" (already current)" if done else ""),
        checks=lambda: ["secretsmanager:DescribeSecret: secret and version found (no DryRun)"],
        unchanged=f"version {args.version_id} of {current['name']} is already current: nothing changed",
        changed=lambda _: f"version {args.version_id} of {current['name']} is current again",
    ))
