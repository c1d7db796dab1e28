"""EC2 actions: describe an instance and collect its state; quarantine and release it; snapshot its volumes.

Side effects, not in dry runs: the instance taken out of its Auto Scaling group (standby, or
detached) and deregistered from its load balancer target groups (autoscaling.py, elbv2.py), then its
network interfaces moved into the isolation security group, termination protection on, the
irp:quarantine tag (the instance keeps running); release puts all of it back. EBS snapshots tagged
with the incident, kept under the retention policy; what the describe and collect actions read
archived (redacted). Dry runs ask AWS (DryRun=True) whether each EC2 write would be allowed (Auto
Scaling and ELB have no DryRun).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from irp.actions.aws import autoscaling, elbv2
from irp.actions.aws.autoscaling import Call
from irp.actions.aws.clients import archive_facts, aws_client, call, check_dry_run, fact_tags, pages
from irp.actions.base import Change, CommaList, Journal, Outcome, UndoPlan, record_outcome, run_change
from irp.actions.registry import ActionArgs, ActionContext, Target, action
from irp.errors import NotConfiguredError, PermanentError
from irp.redaction import redact_text
from irp.settings import get_settings

TAG_QUARANTINE = "irp:quarantine"
TAG_INCIDENT = "irp:incident"

Writes = list[tuple[str, dict[str, Any]]]  # EC2 operations and their arguments, run in order


def _dry_run_all(ctx: ActionContext, ec2: Any, writes: Writes) -> list[str]:
    return [check_dry_run(ctx, ec2, operation, **kwargs) for operation, kwargs in writes]


def _write_all(ctx: ActionContext, ec2: Any, writes: Writes, instance_id: str, *, first: Sequence[Call] = (),
               then: Sequence[Call] = (), traffic: tuple[bool, bool] = (False, False)) -> dict[str, Any]:
    """Run `first` (other services), the EC2 writes, `then`; the state after."""
    for client, operation, kwargs in first:
        call(ctx, client, operation, **kwargs)
    for operation, kwargs in writes:
        call(ctx, ec2, operation, **kwargs)
    for client, operation, kwargs in then:
        call(ctx, client, operation, **kwargs)
    return {**_instance_state(ctx, ec2, instance_id), **_traffic_state(ctx, instance_id, *traffic)}


def _traffic_state(ctx: ActionContext, instance_id: str, asg: bool, tgs: bool,
                   warnings: list[str] | None = None) -> dict[str, Any]:
    """The instance's Auto Scaling group and target group registrations (only the parts asked for).

    With `warnings`, a part AWS refuses to read (e.g. access denied) is left out and said there instead
    of stopping the isolation; without, the refusal is raised.
    """
    state: dict[str, Any] = {}
    for wanted, key, read in ((asg, "auto_scaling", autoscaling.membership), (tgs, "target_groups", elbv2.registrations)):
        if not wanted:
            continue
        try:
            state[key] = read(ctx, instance_id)
        except PermanentError as exc:
            if warnings is None:
                raise
            warnings.append(f"{key.replace('_', ' ')} not read, left as is: {exc}")
    return state


def _describe_instance(ctx: ActionContext, ec2: Any, instance_id: str) -> dict[str, Any]:
    reservations = call(ctx, ec2, "describe_instances", InstanceIds=[instance_id])["Reservations"]
    if not reservations or not reservations[0]["Instances"]:
        raise PermanentError(f"no EC2 instance {instance_id}", provider="AWS ec2", code="InvalidInstanceID.NotFound")
    return reservations[0]["Instances"][0]


def _instance_state(ctx: ActionContext, ec2: Any, instance_id: str) -> dict[str, Any]:
    instance = _describe_instance(ctx, ec2, instance_id)
    protection = call(ctx, ec2, "describe_instance_attribute", InstanceId=instance_id,
                       Attribute="disableApiTermination")["DisableApiTermination"]["Value"]
    return {
        "instance_id": instance_id,
        "state": instance["State"]["Name"],
        "vpc_id": instance.get("VpcId"),
        "interfaces": {
            eni["NetworkInterfaceId"]: sorted(group["GroupId"] for group in eni.get("Groups", []))
            for eni in instance.get("NetworkInterfaces", [])
        },
        "termination_protection": bool(protection),
        "tags": {tag["Key"]: tag["Value"] for tag in instance.get("Tags", [])},
    }


def _isolation_group(ctx: ActionContext, ec2: Any, value: str, vpc_id: str | None) -> tuple[str, dict[str, Any]]:
    if value.startswith("sg-"):
        groups = call(ctx, ec2, "describe_security_groups", absent=("InvalidGroup.NotFound",),
                       GroupIds=[value])
        groups = groups["SecurityGroups"] if groups else []
        if not groups:
            raise PermanentError(f"isolation security group {value} does not exist", provider="AWS ec2",
                                 code="InvalidGroup.NotFound")
        if vpc_id and groups[0].get("VpcId") != vpc_id:
            raise PermanentError(f"isolation security group {value} is in {groups[0].get('VpcId')}, the instance in "
                                 f"{vpc_id}: give the group name to find it per VPC", provider="AWS ec2",
                                 code="InvalidGroup.WrongVpc")
    else:
        filters = [{"Name": "group-name", "Values": [value]}]
        if vpc_id:
            filters.append({"Name": "vpc-id", "Values": [vpc_id]})
        groups = call(ctx, ec2, "describe_security_groups", Filters=filters)["SecurityGroups"]
        if not groups:
            raise PermanentError(f"no security group named {value!r} in {vpc_id}: create the isolation group there",
                                 provider="AWS ec2", code="InvalidGroup.NotFound")
    return groups[0]["GroupId"], groups[0]


class QuarantineArgs(ActionArgs):
    instance_id: Annotated[str, Target("instance")] = Field(..., pattern=r"^i-[0-9a-f]{8,17}$", description="EC2 instance id.")
    isolation_group: Annotated[str | None, Target("security_group")] = Field(
        None, description="sg- id or group name in the instance's VPC; default IRP_AWS_ISOLATION_SECURITY_GROUP."
    )
    protect_from_termination: bool = Field(True, description="Also turn on termination protection (evidence).")
    leave_auto_scaling: bool = Field(
        False, description="Leave the instance in service in its Auto Scaling group (default: standby, or detached "
                           "when the group is at its minimum size).")
    leave_target_groups: bool = Field(False, description="Leave the instance registered in its target groups.")


def _traffic_out(instance_id: str, before: dict[str, Any], current: dict[str, Any],
                 warnings: list[str]) -> tuple[list[Call], dict[str, Any], dict[str, Any], list[str]]:
    """The calls taking the instance out of its group and target groups; what they do; the undo's arguments; the plan."""
    calls: list[Call] = []
    details: dict[str, Any] = {}
    undo: dict[str, Any] = {}
    plan: list[str] = []
    group = before.get("auto_scaling")
    how = autoscaling.way_out(group)
    if how:
        calls += autoscaling.out_calls(instance_id, group["group"], how, current.get("auto_scaling"))
        details["auto_scaling"] = {"group": group["group"], "how": how, "replaced": how == "detached"}
        undo.update(auto_scaling_group=group["group"], auto_scaling=how)
        plan.append(f"{'standby in' if how == 'standby' else 'detach from'} Auto Scaling group {group['group']}"
                    + (" (at its minimum size: a replacement is launched)" if how == "detached" else ""))
    elif group and group["lifecycle_state"] != "Standby":
        warnings.append(f"instance is {group['lifecycle_state']} in Auto Scaling group {group['group']}: left there")
    registered = before.get("target_groups") or []
    if registered:
        calls += elbv2.target_calls("deregister_targets", instance_id, current.get("target_groups") or [])
        details["target_groups"] = registered
        undo["target_groups"] = registered
        plan.append(f"deregister from {len(registered)} target group(s)")
    return calls, details, undo, plan


@action
def quarantine_instance(args: QuarantineArgs, ctx: ActionContext) -> Outcome:
    """Isolate an EC2 instance: out of its Auto Scaling and target groups, isolation group only, protected, tagged."""
    group_setting = args.isolation_group or get_settings().aws_isolation_security_group
    if not group_setting:
        raise NotConfiguredError("aws.quarantine_instance: no isolation group (argument or "
                                 "IRP_AWS_ISOLATION_SECURITY_GROUP)")
    ec2 = aws_client("ec2")
    current = _instance_state(ctx, ec2, args.instance_id)
    if current["state"] in ("shutting-down", "terminated"):
        raise PermanentError(f"instance {args.instance_id} is {current['state']}: nothing to isolate",
                             provider="AWS ec2", code="IncorrectInstanceState")
    if not current["interfaces"]:
        raise PermanentError(f"instance {args.instance_id} has no network interface", provider="AWS ec2",
                             code="NoNetworkInterface")
    group_id, group = _isolation_group(ctx, ec2, group_setting, current["vpc_id"])
    warnings: list[str] = []
    traffic = (not args.leave_auto_scaling, not args.leave_target_groups)
    current.update(_traffic_state(ctx, args.instance_id, *traffic, warnings=warnings))
    journal, before, replayed = Journal.begin(ctx, f"ec2-instance/{args.instance_id}", current, source_system="aws-ec2")
    if group.get("IpPermissions") or group.get("IpPermissionsEgress"):
        warnings.append(f"isolation group {group_id} has {len(group.get('IpPermissions', []))} inbound and "
                        f"{len(group.get('IpPermissionsEgress', []))} outbound rules: it should have none")
    warnings.append("connections already tracked by security groups stay open; block them with a network ACL")
    out, traffic_details, traffic_undo, traffic_plan = _traffic_out(args.instance_id, before, current, warnings)
    moves = [eni for eni, groups in current["interfaces"].items() if groups != [group_id]]
    protect = args.protect_from_termination and not current["termination_protection"]
    tag = current["tags"].get(TAG_QUARANTINE) != ctx.incident.id
    writes: Writes = [("modify_network_interface_attribute", {"NetworkInterfaceId": eni, "Groups": [group_id]})
                      for eni in moves]
    if protect:
        writes.append(("modify_instance_attribute", {"InstanceId": args.instance_id,
                                                     "DisableApiTermination": {"Value": True}}))
    if tag:
        writes.append(("create_tags", {"Resources": [args.instance_id],
                                       "Tags": [{"Key": TAG_QUARANTINE, "Value": ctx.incident.id}]}))

    def isolated(state: dict[str, Any]) -> bool:
        return (all(g == [group_id] for g in state["interfaces"].values())
                and (state["termination_protection"] or not args.protect_from_termination)
                and state["tags"].get(TAG_QUARANTINE) == ctx.incident.id)

    undo = None
    if not isolated(before) or traffic_undo:
        undo = UndoPlan(action="aws.release_instance", args={
            "instance_id": args.instance_id,
            "interfaces": before["interfaces"],
            "termination_protection": before["termination_protection"],
            "remove_tags": [] if TAG_QUARANTINE in before["tags"] else [TAG_QUARANTINE],
            **traffic_undo,
        })
    plan = ", ".join([*traffic_plan, f"move {', '.join(moves) or 'no interface'} to {group_id}"]
                     + (["protect from termination"] if protect else []) + ([f"tag {TAG_QUARANTINE}"] if tag else []))
    return run_change(ctx, Change(
        journal=journal, source_system="aws-ec2", before=before, done=not writes and not out, current=current,
        write=lambda: _write_all(ctx, ec2, writes, args.instance_id, first=out, traffic=traffic),
        redone=replayed and undo is not None, undo=undo,
        checks=lambda: ["ec2:DescribeInstances, DescribeInstanceAttribute, DescribeSecurityGroups: target found",
                        *_dry_run_all(ctx, ec2, writes)],
        dry_run=f"dry run: would quarantine {args.instance_id}: {plan}" if writes or out
        else f"dry run: {args.instance_id} is already quarantined",
        unchanged=f"instance {args.instance_id} is already quarantined in {group_id} ({{why}}): nothing changed",
        changed=lambda after: f"instance {args.instance_id} quarantined ({plan}); still {after['state']} for forensics",
        details={"isolation_group": group_id, "warnings": warnings, **traffic_details},
    ))


class Registration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    target_group_arn: str = Field(..., pattern=r"^arn:aws[a-z-]*:elasticloadbalancing:", description="Target group ARN.")
    port: int | None = Field(None, ge=1, le=65535, description="Port the instance was registered on.")


class ReleaseArgs(ActionArgs):
    instance_id: Annotated[str, Target("instance")] = Field(..., pattern=r"^i-[0-9a-f]{8,17}$", description="EC2 instance id.")
    interfaces: dict[str, list[str]] = Field(..., description="Security groups to put back, per network interface.")
    termination_protection: bool | None = Field(None, description="Value to put back; null leaves it.")
    remove_tags: CommaList = Field(default_factory=list, description="Tag keys to remove.")
    auto_scaling_group: str | None = Field(None, min_length=1, max_length=255,
                                           description="Auto Scaling group to put the instance back in service in.")
    auto_scaling: autoscaling.How | None = Field(
        None, description="How quarantine took it out: standby (ExitStandby) or detached (AttachInstances).")
    target_groups: list[Registration] = Field(default_factory=list, description="Target groups and ports to "
                                                                                  "register the instance in again.")


def _traffic_back(args: ReleaseArgs, current: dict[str, Any]) -> tuple[list[Call], list[str]]:
    """The calls putting the instance back in its Auto Scaling group and target groups, and the plan."""
    calls: list[Call] = []
    plan: list[str] = []
    if args.auto_scaling_group and args.auto_scaling:
        back = autoscaling.back_calls(args.instance_id, args.auto_scaling_group, args.auto_scaling,
                                      current.get("auto_scaling"))
        calls += back
        plan += [f"back in service in Auto Scaling group {args.auto_scaling_group}"] if back else []
    wanted = [reg.model_dump() for reg in args.target_groups]
    missing = [reg for reg in wanted if reg not in (current.get("target_groups") or [])]
    calls += elbv2.target_calls("register_targets", args.instance_id, missing)
    plan += [f"registered again in {len(missing)} target group(s)"] if missing else []
    return calls, plan


@action
def release_instance(args: ReleaseArgs, ctx: ActionContext) -> Outcome:
    """Put a quarantined instance back: groups, protection, tags, Auto Scaling and target groups (undo of quarantine)."""
    ec2 = aws_client("ec2")
    current = _instance_state(ctx, ec2, args.instance_id)
    traffic = (bool(args.auto_scaling_group and args.auto_scaling), bool(args.target_groups))
    current.update(_traffic_state(ctx, args.instance_id, *traffic))
    journal, before, _ = Journal.begin(ctx, f"ec2-instance/{args.instance_id}", current, source_system="aws-ec2")
    missing = [eni for eni in args.interfaces if eni not in current["interfaces"]]
    moves = {eni: sorted(groups) for eni, groups in args.interfaces.items()
             if eni in current["interfaces"] and current["interfaces"][eni] != sorted(groups)}
    protection = (args.termination_protection is not None
                  and args.termination_protection != current["termination_protection"])
    tags = [key for key in args.remove_tags if key in current["tags"]]
    writes: Writes = [("modify_network_interface_attribute", {"NetworkInterfaceId": eni, "Groups": groups})
                      for eni, groups in moves.items()]
    if protection:
        writes.append(("modify_instance_attribute", {"InstanceId": args.instance_id,
                                                     "DisableApiTermination": {"Value": args.termination_protection}}))
    if tags:
        writes.append(("delete_tags", {"Resources": [args.instance_id], "Tags": [{"Key": key} for key in tags]}))
    back, plan = _traffic_back(args, current)
    back_text = f"; {', '.join(plan)}" if plan else ""
    return run_change(ctx, Change(
        journal=journal, source_system="aws-ec2", before=before, done=not writes and not back, current=current,
        write=lambda: _write_all(ctx, ec2, writes, args.instance_id, then=back, traffic=traffic),
        checks=lambda: _dry_run_all(ctx, ec2, writes),
        dry_run=f"dry run: would release {args.instance_id} (groups of {len(moves)} interface(s), "
                f"protection {'reset' if protection else 'unchanged'}, {len(tags)} tag(s) removed{back_text})",
        unchanged=f"instance {args.instance_id} already has its groups, protection and tags back: nothing changed",
        changed=lambda _: f"instance {args.instance_id} released from quarantine: security groups restored on "
                          f"{len(moves)} interface(s){back_text}",
        details={"interfaces_gone": missing} if missing else {},
    ))


class SnapshotArgs(ActionArgs):
    instance_id: str = Field(..., pattern=r"^i-[0-9a-f]{8,17}$", description="EC2 instance whose volumes to copy.")
    volume_ids: CommaList | None = Field(None, description="Only these attached volumes (default: all).")


@action
def snapshot_volumes(args: SnapshotArgs, ctx: ActionContext) -> Outcome:
    """Snapshot an instance's EBS volumes as evidence, tagged with the incident (kept, never undone)."""
    ec2 = aws_client("ec2")
    instance = _describe_instance(ctx, ec2, args.instance_id)
    volumes = {m["Ebs"]["VolumeId"]: m["DeviceName"] for m in instance.get("BlockDeviceMappings", []) if "Ebs" in m}
    if args.volume_ids:
        unknown = sorted(set(args.volume_ids) - set(volumes))
        if unknown:
            raise PermanentError(f"volumes {', '.join(unknown)} are not attached to {args.instance_id}; attached: "
                                 f"{', '.join(volumes) or 'none'}", provider="AWS ec2", code="InvalidVolume.NotFound")
        volumes = {vol: dev for vol, dev in volumes.items() if vol in args.volume_ids}
    if not volumes:
        raise PermanentError(f"instance {args.instance_id} has no EBS volume to snapshot", provider="AWS ec2",
                             code="NoVolume")
    target = f"ec2-instance/{args.instance_id}/volumes"
    journal, before, _ = Journal.begin(ctx, target,
                                            {"instance_id": args.instance_id, "volumes": volumes}, source_system="aws-ec2")
    snapshots, created = [], 0
    checks = []
    for volume_id, device in volumes.items():
        existing = call(ctx, ec2, "describe_snapshots", OwnerIds=["self"], Filters=[
            {"Name": "volume-id", "Values": [volume_id]},
            {"Name": f"tag:{TAG_INCIDENT}", "Values": [ctx.incident.id]},
        ])["Snapshots"]
        existing = [s for s in existing if s.get("State") != "error"]
        if existing:
            snap = existing[0]
            snapshots.append({"volume_id": volume_id, "device": device, "snapshot_id": snap["SnapshotId"],
                              "state": snap.get("State"), "start_time": snap.get("StartTime"), "reused": True})
            continue
        if ctx.dry_run:
            checks.append(check_dry_run(ctx, ec2, "create_snapshot", VolumeId=volume_id))
            snapshots.append({"volume_id": volume_id, "device": device, "snapshot_id": None, "reused": False})
            continue
        snap = call(ctx, ec2, "create_snapshot", VolumeId=volume_id,
                     Description=f"irp evidence: incident {ctx.incident.id}, {args.instance_id} {device}",
                     TagSpecifications=[{"ResourceType": "snapshot", "Tags": [
                         {"Key": TAG_INCIDENT, "Value": ctx.incident.id},
                         {"Key": "irp:step", "Value": f"{ctx.stage.value}.{ctx.step}"},
                         {"Key": "irp:instance", "Value": args.instance_id},
                     ]}])
        created += 1
        snapshots.append({"volume_id": volume_id, "device": device, "snapshot_id": snap["SnapshotId"],
                          "state": snap.get("State"), "start_time": snap.get("StartTime"), "reused": False})
    after = {"instance_id": args.instance_id, "snapshots": snapshots}
    if ctx.dry_run:
        message = f"dry run: would snapshot {len(checks)} volume(s) of {args.instance_id}"
    elif created:
        message = f"{created} snapshot(s) of {args.instance_id} started as evidence"
    else:
        message = f"the volumes of {args.instance_id} already have snapshots for this incident: nothing changed"
    return record_outcome(ctx, Outcome(
        target=target, changed=created > 0, dry_run=ctx.dry_run, before=before, after=after, checks=checks,
        message=message, details={"snapshot_ids": [s["snapshot_id"] for s in snapshots if s["snapshot_id"]],
                                  "undo": "none: evidence snapshots are kept under the retention policy"},
    ), journal, source_system="aws-ec2")


class InstanceArgs(ActionArgs):
    instance_id: str = Field(..., pattern=r"^i-[0-9a-f]{8,17}$", description="EC2 instance id.")


def _target_groups(ctx: ActionContext, instance: dict[str, Any]) -> list[dict[str, Any]]:
    """The load balancer target groups of the instance's VPC that hold it (by id, or by private IP)."""
    elbv2 = aws_client("elbv2")
    addresses = {instance["InstanceId"], *(a["PrivateIpAddress"] for eni in instance.get("NetworkInterfaces", [])
                                           for a in eni.get("PrivateIpAddresses", []))}
    found = []
    for group in pages(ctx, elbv2, "describe_target_groups", "TargetGroups", token=("Marker", "NextMarker")):
        if group.get("VpcId") != instance.get("VpcId") or group.get("TargetType") not in ("instance", "ip"):
            continue
        health = call(ctx, elbv2, "describe_target_health", TargetGroupArn=group["TargetGroupArn"])
        for target in health.get("TargetHealthDescriptions", []):
            if target["Target"]["Id"] in addresses:
                found.append({"arn": group["TargetGroupArn"], "name": group.get("TargetGroupName"),
                              "port": target["Target"].get("Port"), "id": target["Target"]["Id"],
                              "health": target.get("TargetHealth", {}).get("State"),
                              "load_balancers": group.get("LoadBalancerArns", [])})
    return found


@action
def describe_instance(args: InstanceArgs, ctx: ActionContext) -> Outcome:
    """Archive and return an instance's Auto Scaling group, target groups, network, profile and tags (read only)."""
    ec2 = aws_client("ec2")
    instance = _describe_instance(ctx, ec2, args.instance_id)
    scaling = call(ctx, aws_client("autoscaling"), "describe_auto_scaling_instances",
                   InstanceIds=[args.instance_id])["AutoScalingInstances"]
    facts = {
        "instance_id": args.instance_id, "state": instance["State"]["Name"],
        "launch_time": instance.get("LaunchTime"), "instance_type": instance.get("InstanceType"),
        "image_id": instance.get("ImageId"), "vpc_id": instance.get("VpcId"), "subnet_id": instance.get("SubnetId"),
        "private_ips": sorted({a["PrivateIpAddress"] for eni in instance.get("NetworkInterfaces", [])
                               for a in eni.get("PrivateIpAddresses", [])}),
        "public_ip": instance.get("PublicIpAddress"),
        "security_groups": [g["GroupId"] for g in instance.get("SecurityGroups", [])],
        "instance_profile": instance.get("IamInstanceProfile", {}).get("Arn"),
        "auto_scaling_group": scaling[0]["AutoScalingGroupName"] if scaling else None,
        "auto_scaling_state": scaling[0].get("LifecycleState") if scaling else None,
        "target_groups": _target_groups(ctx, instance),
        **fact_tags(instance.get("Tags", [])),
    }
    return archive_facts(
        ctx, f"ec2-instance-{args.instance_id}", facts, target=f"ec2-instance/{args.instance_id}",
        source_system="aws-ec2",
        message=f"instance {args.instance_id}: {facts['state']}, Auto Scaling group "
                f"{facts['auto_scaling_group'] or 'none'}, {len(facts['target_groups'])} target group(s), "
                f"tenant {facts['tenant'] or 'untagged'}",
    )


class InstanceStateArgs(ActionArgs):
    instance_id: str = Field(..., pattern=r"^i-[0-9a-f]{8,17}$", description="EC2 instance id.")
    snapshot: bool = Field(True, description="Also snapshot its EBS volumes (aws.snapshot_volumes), after the rest.")


def _console_text(output: str | None) -> str:
    """The console output as text: AWS sends it base64-encoded (moto, plain)."""
    if not output:
        return ""
    try:
        return base64.b64decode(output, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        return output


@action
def collect_instance_state(args: InstanceStateArgs, ctx: ActionContext) -> Outcome:
    """Archive an instance's console output and EC2 description, then snapshot its volumes (most volatile first)."""
    ec2 = aws_client("ec2")
    console = call(ctx, ec2, "get_console_output", InstanceId=args.instance_id)
    instance = _describe_instance(ctx, ec2, args.instance_id)
    text = redact_text(_console_text(console.get("Output")))
    state = archive_facts(
        ctx, f"ec2-instance-state-{args.instance_id}",
        {"instance_id": args.instance_id, "console_output_time": console.get("Timestamp"), "console_output": text,
         "instance": instance},
        target=f"ec2-instance/{args.instance_id}", source_system="aws-ec2",
        summary={"instance_id": args.instance_id, "console_output_time": console.get("Timestamp"),
                 "console_output_lines": len(text.splitlines()), "state": instance["State"]["Name"]},
        message=f"console output ({len(text.splitlines())} line(s)) and description of {args.instance_id} archived",
    )
    if not args.snapshot:
        return state
    try:
        snaps = snapshot_volumes(SnapshotArgs(instance_id=args.instance_id), ctx)
    except PermanentError as exc:
        if exc.code != "NoVolume":
            raise
        ctx.record(f"{args.instance_id} has no EBS volume: no snapshot (instance store is lost when it stops)")
        return state.model_copy(update={"details": {**state.details, "snapshot_ids": [], "snapshots": None}})
    return state.model_copy(update={
        "changed": snaps.changed, "checks": [*state.checks, *snaps.checks], "message": f"{state.message}; {snaps.message}",
        "details": {**state.details, "snapshot_ids": snaps.details["snapshot_ids"], "snapshots": snaps.after}})
