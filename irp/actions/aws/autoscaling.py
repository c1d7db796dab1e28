"""Auto Scaling, for aws.quarantine_instance and aws.release_instance: an instance's group, out and back.

Out: EnterStandby with ShouldDecrementDesiredCapacity=true when the group's desired capacity is above
its minimum (the group neither replaces the instance nor sends it traffic), else DetachInstances (the
group launches a replacement). Either way the group stops health-checking the instance, so an
isolation that fails its load balancer health checks does not get it terminated with its evidence.
Back: ExitStandby or AttachInstances (each adds one to the desired capacity). No DryRun in Auto Scaling.
"""

from __future__ import annotations

from typing import Any, Literal

from irp.actions.aws.clients import aws_client, call
from irp.actions.registry import ActionContext

How = Literal["standby", "detached"]
Call = tuple[Any, str, dict[str, Any]]  # a client, an operation, its arguments


def membership(ctx: ActionContext, instance_id: str) -> dict[str, Any] | None:
    """The instance's group, its lifecycle state there and the group's sizes; None when in no group."""
    asg = aws_client("autoscaling")
    found = call(ctx, asg, "describe_auto_scaling_instances", InstanceIds=[instance_id])["AutoScalingInstances"]
    if not found:
        return None
    name = found[0]["AutoScalingGroupName"]
    groups = call(ctx, asg, "describe_auto_scaling_groups", AutoScalingGroupNames=[name])["AutoScalingGroups"]
    group = groups[0] if groups else {}
    return {"group": name, "lifecycle_state": found[0]["LifecycleState"], "min_size": group.get("MinSize"),
            "desired_capacity": group.get("DesiredCapacity"), "max_size": group.get("MaxSize")}


def way_out(before: dict[str, Any] | None) -> How | None:
    """standby when the group may lose one of its desired capacity, else detached; None when not in service."""
    if not before or before["lifecycle_state"] != "InService":
        return None
    return "standby" if (before["desired_capacity"] or 0) > (before["min_size"] or 0) else "detached"


def out_calls(instance_id: str, group: str, how: How, current: dict[str, Any] | None) -> list[Call]:
    """The call that takes the instance out of `group` as `how`; none when it already is."""
    if current is None or current["group"] != group:
        return []
    asg = aws_client("autoscaling")
    ident = {"InstanceIds": [instance_id], "AutoScalingGroupName": group}
    if how == "standby" and current["lifecycle_state"] == "InService":
        return [(asg, "enter_standby", {**ident, "ShouldDecrementDesiredCapacity": True})]
    if how == "detached":
        return [(asg, "detach_instances", {**ident, "ShouldDecrementDesiredCapacity": False})]
    return []


def back_calls(instance_id: str, group: str, how: How, current: dict[str, Any] | None) -> list[Call]:
    """The call that puts the instance back in service in `group`; none when it already is."""
    asg = aws_client("autoscaling")
    ident = {"InstanceIds": [instance_id], "AutoScalingGroupName": group}
    if how == "standby" and current is not None and current["lifecycle_state"] == "Standby":
        return [(asg, "exit_standby", ident)]
    if how == "detached" and current is None:
        return [(asg, "attach_instances", ident)]
    return []
