"""Elastic Load Balancing v2, for aws.quarantine_instance and aws.release_instance: target registrations.

An instance is found in every target group of type `instance` (with its port: one instance may be
registered on several); targets already draining count as gone. Deregistering stops new requests at
once (in-flight ones drain); registering puts it back on the same ports. No DryRun in ELB.
"""

from __future__ import annotations

from typing import Any

from irp.actions.aws.autoscaling import Call
from irp.actions.aws.clients import aws_client, call
from irp.actions.registry import ActionContext


def registrations(ctx: ActionContext, instance_id: str) -> list[dict[str, Any]]:
    """Where the instance is registered: [{"target_group_arn", "port"}], sorted."""
    elb = aws_client("elbv2")
    found: list[dict[str, Any]] = []
    marker = None
    while True:
        page = call(ctx, elb, "describe_target_groups", **({"Marker": marker} if marker else {}))
        for group in page.get("TargetGroups", []):
            if group.get("TargetType", "instance") != "instance":
                continue
            health = call(ctx, elb, "describe_target_health", absent=("TargetGroupNotFound",),
                          TargetGroupArn=group["TargetGroupArn"]) or {}
            found += [{"target_group_arn": group["TargetGroupArn"], "port": item["Target"].get("Port")}
                      for item in health.get("TargetHealthDescriptions", [])
                      if item["Target"]["Id"] == instance_id and item.get("TargetHealth", {}).get("State") != "draining"]
        marker = page.get("NextMarker")
        if not marker:
            return sorted(found, key=lambda r: (r["target_group_arn"], r["port"] or 0))


def target_calls(operation: str, instance_id: str, wanted: list[dict[str, Any]]) -> list[Call]:
    """register_targets or deregister_targets of the instance, one call per target group."""
    elb = aws_client("elbv2")
    by_group: dict[str, list[dict[str, Any]]] = {}
    for reg in wanted:
        port = {"Port": reg["port"]} if reg.get("port") else {}
        by_group.setdefault(reg["target_group_arn"], []).append({"Id": instance_id, **port})
    return [(elb, operation, {"TargetGroupArn": arn, "Targets": targets}) for arn, targets in by_group.items()]
