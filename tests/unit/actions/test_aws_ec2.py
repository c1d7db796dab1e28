"""EC2 and WAF actions against moto's server over HTTP: quarantine, snapshots, blocking addresses."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import pytest
from service_fixtures import (  # noqa: F401  (fixtures)
    Fault,
    aws,
    boto,
    ec2_error,
    events,
    fault_proxy,
    iam_error,
    json_error,
    json_target,
    make_ctx,
    moto_server,
    query_action,
)

from irp.actions.aws.ec2 import QuarantineArgs, ReleaseArgs, SnapshotArgs, quarantine_instance, release_instance, snapshot_volumes
from irp.actions.aws.network import BlockIpArgs, UnblockIpArgs, block_ip, unblock_ip
from irp.actions.registry import get_registry
from irp.errors import NotConfiguredError, PermanentError


@pytest.fixture
def ec2(aws: str):
    return boto("ec2", aws)


@pytest.fixture
def instance(ec2) -> dict:
    """A running instance in the default VPC with one volume, and an empty isolation group there."""
    found = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1,
                              BlockDeviceMappings=[{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])
    inst = found["Instances"][0]
    group = ec2.create_security_group(GroupName="irp-isolation", Description="no traffic", VpcId=inst["VpcId"])
    ec2.revoke_security_group_egress(GroupId=group["GroupId"], IpPermissions=[
        {"IpProtocol": "-1", "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}])
    return {"id": inst["InstanceId"], "vpc": inst["VpcId"], "eni": inst["NetworkInterfaces"][0]["NetworkInterfaceId"],
            "groups": [g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]], "isolation": group["GroupId"]}


def state(ec2, instance_id: str) -> dict:
    inst = ec2.describe_instances(InstanceIds=[instance_id])["Reservations"][0]["Instances"][0]
    protection = ec2.describe_instance_attribute(InstanceId=instance_id, Attribute="disableApiTermination")
    return {
        "state": inst["State"]["Name"],
        "groups": sorted(g["GroupId"] for g in inst["NetworkInterfaces"][0]["Groups"]),
        "protected": protection["DisableApiTermination"]["Value"],
        "tags": {t["Key"]: t["Value"] for t in inst.get("Tags", [])},
    }


def run_undo(outcome, evidence_root):
    spec = get_registry()[outcome.undo.action]
    return spec.fn(spec.args_model.model_validate(outcome.undo.args),
                   make_ctx(evidence_root, step="undo_it", action=outcome.undo.action))


class TestQuarantine:
    def test_isolates_keeps_running_and_tags(self, ec2, instance, evidence_root):
        original = state(ec2, instance["id"])
        outcome = quarantine_instance(QuarantineArgs(instance_id=instance["id"], isolation_group="irp-isolation"),
                                      make_ctx(evidence_root))
        now = state(ec2, instance["id"])
        assert now == {"state": "running", "groups": [instance["isolation"]], "protected": True,
                       "tags": {"irp:quarantine": "INC-TEST-0001"}}
        assert outcome.changed and outcome.details["isolation_group"] == instance["isolation"]
        assert outcome.before["interfaces"] == {instance["eni"]: original["groups"]}
        assert outcome.undo.action == "aws.release_instance"

    def test_second_run_changes_nothing(self, ec2, instance, evidence_root):
        args = QuarantineArgs(instance_id=instance["id"], isolation_group=instance["isolation"])
        first = quarantine_instance(args, make_ctx(evidence_root))
        second = quarantine_instance(args, make_ctx(evidence_root))
        assert not second.changed and "already quarantined" in second.message
        assert "earlier attempt" in second.message and second.undo == first.undo

    def test_dry_run_asks_aws_and_changes_nothing(self, ec2, instance, evidence_root):
        original = state(ec2, instance["id"])
        outcome = quarantine_instance(QuarantineArgs(instance_id=instance["id"], isolation_group="irp-isolation"),
                                      make_ctx(evidence_root, dry_run=True))
        assert state(ec2, instance["id"]) == original
        assert outcome.dry_run and outcome.details["would_change"]
        assert "modify_network_interface_attribute: allowed (AWS DryRun)" in outcome.checks
        assert "modify_instance_attribute: allowed (AWS DryRun)" in outcome.checks
        assert "create_tags: allowed (AWS DryRun)" in outcome.checks

    def test_dry_run_reports_a_denied_permission(self, ec2, instance, fault_proxy, evidence_root):
        fault_proxy.faults = [Fault(query_action("ModifyNetworkInterfaceAttribute"), 403,
                                    ec2_error("UnauthorizedOperation", "You are not authorized"))]
        with pytest.raises(PermanentError, match="UnauthorizedOperation"):
            quarantine_instance(QuarantineArgs(instance_id=instance["id"], isolation_group="irp-isolation"),
                                make_ctx(evidence_root, dry_run=True))
        assert events(evidence_root)[0]["data"]["operation"] == "modify_network_interface_attribute (DryRun)"

    def test_undo_restores_groups_protection_and_tags(self, ec2, instance, evidence_root):
        original = state(ec2, instance["id"])
        outcome = quarantine_instance(QuarantineArgs(instance_id=instance["id"], isolation_group="irp-isolation"),
                                      make_ctx(evidence_root))
        released = run_undo(outcome, evidence_root)
        assert released.changed and state(ec2, instance["id"]) == original
        again = release_instance(ReleaseArgs.model_validate(outcome.undo.args), make_ctx(evidence_root, step="u2"))
        assert not again.changed and "nothing changed" in again.message

    def test_the_isolation_group_must_be_configured(self, ec2, instance, evidence_root):
        with pytest.raises(NotConfiguredError, match="IRP_AWS_ISOLATION_SECURITY_GROUP"):
            quarantine_instance(QuarantineArgs(instance_id=instance["id"]), make_ctx(evidence_root))

    def test_the_setting_names_the_group(self, ec2, instance, evidence_root, monkeypatch):
        from irp.settings import get_settings

        monkeypatch.setenv("IRP_AWS_ISOLATION_SECURITY_GROUP", "irp-isolation")
        get_settings.cache_clear()
        outcome = quarantine_instance(QuarantineArgs(instance_id=instance["id"]), make_ctx(evidence_root))
        assert outcome.changed and state(ec2, instance["id"])["groups"] == [instance["isolation"]]

    def test_a_group_of_another_vpc_is_refused(self, ec2, instance, evidence_root):
        vpc = ec2.create_vpc(CidrBlock="10.9.0.0/16")["Vpc"]["VpcId"]
        other = ec2.create_security_group(GroupName="elsewhere", Description="x", VpcId=vpc)["GroupId"]
        with pytest.raises(PermanentError, match=f"isolation security group {other} is in {vpc}"):
            quarantine_instance(QuarantineArgs(instance_id=instance["id"], isolation_group=other),
                                make_ctx(evidence_root))
        assert state(ec2, instance["id"])["groups"] == instance["groups"]

    def test_ec2_throttling_is_retried(self, ec2, instance, fault_proxy, evidence_root):
        fault_proxy.faults = [Fault(query_action("ModifyNetworkInterfaceAttribute"), 503,
                                    ec2_error("RequestLimitExceeded", "Request limit exceeded."), times=2)]
        outcome = quarantine_instance(QuarantineArgs(instance_id=instance["id"], isolation_group="irp-isolation"),
                                      make_ctx(evidence_root))
        assert outcome.changed and state(ec2, instance["id"])["groups"] == [instance["isolation"]]
        assert fault_proxy.count("ModifyNetworkInterfaceAttribute") == 3


class TestSnapshots:
    def test_snapshots_once_per_incident(self, ec2, instance, evidence_root):
        first = snapshot_volumes(SnapshotArgs(instance_id=instance["id"]), make_ctx(evidence_root, step="snap"))
        snaps = ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:irp:incident", "Values": ["INC-TEST-0001"]}])["Snapshots"]
        assert first.changed and [s["SnapshotId"] for s in snaps] == first.details["snapshot_ids"]
        assert first.undo is None and "kept" in first.details["undo"]
        second = snapshot_volumes(SnapshotArgs(instance_id=instance["id"]), make_ctx(evidence_root, step="snap"))
        assert not second.changed and second.details["snapshot_ids"] == first.details["snapshot_ids"]
        assert second.after["snapshots"][0]["reused"]
        assert len(ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:irp:incident", "Values": ["INC-TEST-0001"]}])["Snapshots"]) == 1

    def test_dry_run_creates_no_snapshot(self, ec2, instance, evidence_root):
        outcome = snapshot_volumes(SnapshotArgs(instance_id=instance["id"]), make_ctx(evidence_root, dry_run=True))
        assert outcome.checks == ["create_snapshot: allowed (AWS DryRun)"]
        assert ec2.describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:irp:incident", "Values": ["INC-TEST-0001"]}])["Snapshots"] == []

    def test_unknown_volume_is_refused(self, ec2, instance, evidence_root):
        with pytest.raises(PermanentError, match="vol-0000 are not attached"):
            snapshot_volumes(SnapshotArgs(instance_id=instance["id"], volume_ids="vol-0000"), make_ctx(evidence_root))


class TestBlockIpWithWaf:
    @pytest.fixture
    def ip_set(self, aws) -> str:
        waf = boto("wafv2", aws)
        return waf.create_ip_set(Name="blocklist", Scope="REGIONAL", IPAddressVersion="IPV4",
                                 Addresses=["198.51.100.0/24"])["Summary"]["ARN"]

    def addresses(self, aws, arn: str) -> list[str]:
        parts = arn.split("/")
        return boto("wafv2", aws).get_ip_set(Name=parts[-2], Scope="REGIONAL", Id=parts[-1])["IPSet"]["Addresses"]

    def test_block_is_idempotent_and_undone(self, aws, ip_set, evidence_root):
        args = BlockIpArgs(cidr="203.0.113.7", ip_set_arn=ip_set)
        first = block_ip(args, make_ctx(evidence_root))
        assert first.changed and sorted(self.addresses(aws, ip_set)) == ["198.51.100.0/24", "203.0.113.7/32"]
        second = block_ip(args, make_ctx(evidence_root))
        assert not second.changed and second.undo == first.undo
        assert len(self.addresses(aws, ip_set)) == 2
        run_undo(first, evidence_root)
        assert self.addresses(aws, ip_set) == ["198.51.100.0/24"]

    def test_an_address_already_blocked_has_nothing_to_undo(self, aws, ip_set, evidence_root):
        outcome = block_ip(BlockIpArgs(cidr="198.51.100.0/24", ip_set_arn=ip_set), make_ctx(evidence_root))
        assert not outcome.changed and outcome.undo is None

    def test_dry_run_reads_only(self, aws, ip_set, evidence_root):
        outcome = block_ip(BlockIpArgs(cidr="203.0.113.7/32", ip_set_arn=ip_set),
                           make_ctx(evidence_root, dry_run=True))
        assert outcome.details["would_change"] and self.addresses(aws, ip_set) == ["198.51.100.0/24"]

    def test_a_lost_lock_is_retried(self, aws, ip_set, fault_proxy, evidence_root):
        fault_proxy.faults = [Fault(json_target("UpdateIPSet"), 400, json_error("WAFOptimisticLockException"),
                                    content_type="application/x-amz-json-1.1")]
        outcome = block_ip(BlockIpArgs(cidr="203.0.113.7", ip_set_arn=ip_set), make_ctx(evidence_root))
        assert outcome.changed and "203.0.113.7/32" in self.addresses(aws, ip_set)
        assert fault_proxy.count("UpdateIPSet") == 2 and fault_proxy.count("GetIPSet") == 3

    def test_ip_versions_must_match(self, aws, ip_set, evidence_root):
        with pytest.raises(PermanentError, match="holds IPV4 addresses"):
            block_ip(BlockIpArgs(cidr="2001:db8::1", ip_set_arn=ip_set), make_ctx(evidence_root))

    def test_unconfigured_ip_set(self, aws, evidence_root):
        with pytest.raises(NotConfiguredError, match="IRP_AWS_WAF_IP_SET_ARN"):
            block_ip(BlockIpArgs(cidr="203.0.113.7"), make_ctx(evidence_root))

    @pytest.mark.parametrize("cidr", ["0.0.0.0/0", "10.0.0.0/7", "::/0", "not-an-ip"])
    def test_too_wide_or_invalid_is_refused_by_the_model(self, cidr):
        with pytest.raises(ValueError, match="cidr"):
            BlockIpArgs(cidr=cidr)


class TestBlockIpWithNetworkAcl:
    @pytest.fixture
    def acl(self, ec2) -> str:
        return ec2.describe_network_acls()["NetworkAcls"][0]["NetworkAclId"]

    def denies(self, ec2, acl: str) -> list[tuple]:
        entries = ec2.describe_network_acls(NetworkAclIds=[acl])["NetworkAcls"][0]["Entries"]
        return sorted((e["RuleNumber"], e["Egress"], e.get("CidrBlock")) for e in entries
                      if e["RuleAction"] == "deny" and e["RuleNumber"] != 32767)

    def test_denies_both_directions_idempotently_and_undoes(self, ec2, acl, evidence_root):
        args = BlockIpArgs(cidr="203.0.113.0/28", method="nacl", network_acl_id=acl)
        first = block_ip(args, make_ctx(evidence_root))
        assert self.denies(ec2, acl) == [(1, False, "203.0.113.0/28"), (1, True, "203.0.113.0/28")]
        assert first.undo.args["rule_numbers"] == {"ingress": 1, "egress": 1}
        second = block_ip(args, make_ctx(evidence_root))
        assert not second.changed and len(self.denies(ec2, acl)) == 2
        run_undo(first, evidence_root)
        assert self.denies(ec2, acl) == []

    def test_dry_run_asks_aws(self, ec2, acl, fault_proxy, evidence_root):
        # moto 5.2.5 ignores DryRun on CreateNetworkAclEntry; the proxy answers as AWS does
        fault_proxy.faults = [Fault(lambda m, p, h, body: b"Action=CreateNetworkAclEntry" in body
                                    and b"DryRun=true" in body, 412, ec2_error("DryRunOperation", "would succeed"))]
        outcome = block_ip(BlockIpArgs(cidr="203.0.113.9", method="nacl", network_acl_id=acl, direction="ingress"),
                           make_ctx(evidence_root, dry_run=True))
        assert outcome.checks == ["create_network_acl_entry: allowed (AWS DryRun)"]
        assert self.denies(ec2, acl) == []

    def test_an_api_that_ignores_dry_run_is_reported(self, ec2, acl, evidence_root):
        # on moto itself the entry is created: the dry run must say so, never report "allowed"
        with pytest.raises(PermanentError, match="did not honour DryRun"):
            block_ip(BlockIpArgs(cidr="203.0.113.9", method="nacl", network_acl_id=acl, direction="ingress"),
                     make_ctx(evidence_root, dry_run=True))
        assert events(evidence_root)[0]["data"]["code"] == "DryRunIgnored"

    def test_picks_a_free_rule_number(self, ec2, acl, evidence_root):
        ec2.create_network_acl_entry(NetworkAclId=acl, RuleNumber=1, Protocol="-1", RuleAction="allow",
                                     Egress=False, CidrBlock="192.0.2.0/24")
        outcome = block_ip(BlockIpArgs(cidr="203.0.113.9", method="nacl", network_acl_id=acl, direction="ingress"),
                           make_ctx(evidence_root))
        assert outcome.details["rule_numbers"] == {"ingress": 2}

    def test_unblock_without_rule_numbers_removes_every_deny_of_the_cidr(self, ec2, acl, evidence_root):
        block_ip(BlockIpArgs(cidr="203.0.113.9", method="nacl", network_acl_id=acl), make_ctx(evidence_root))
        outcome = unblock_ip(UnblockIpArgs(cidr="203.0.113.9/32", method="nacl", network_acl_id=acl),
                             make_ctx(evidence_root, step="unblock"))
        assert outcome.changed and self.denies(ec2, acl) == []


class TestQuarantineTraffic:
    """An instance in an Auto Scaling group and in target groups: out of both after quarantine, back after release."""

    @pytest.fixture
    def served(self, aws, ec2) -> dict:
        subnet = ec2.describe_subnets()["Subnets"][0]
        vpc = subnet["VpcId"]
        elb = boto("elbv2", aws)
        web, admin = (elb.create_target_group(Name=name, Protocol="HTTP", Port=port, VpcId=vpc, TargetType="instance")
                      ["TargetGroups"][0]["TargetGroupArn"] for name, port in (("web", 80), ("admin", 8080)))
        asg = boto("autoscaling", aws)
        ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={"ImageId": "ami-12345678",
                                                                                 "InstanceType": "t3.micro"})
        asg.create_auto_scaling_group(AutoScalingGroupName="web", LaunchTemplate={"LaunchTemplateName": "web"},
                                      MinSize=1, MaxSize=3, DesiredCapacity=2, VPCZoneIdentifier=subnet["SubnetId"],
                                      TargetGroupARNs=[web])
        instance_id = asg.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
        elb.register_targets(TargetGroupArn=admin, Targets=[{"Id": instance_id, "Port": 9000}])
        ec2.create_security_group(GroupName="irp-isolation", Description="no traffic", VpcId=vpc)
        return {"id": instance_id, "asg": asg, "elb": elb, "web": web, "admin": admin}

    @staticmethod
    def placement(served) -> dict:
        found = served["asg"].describe_auto_scaling_instances(InstanceIds=[served["id"]])["AutoScalingInstances"]
        group = served["asg"].describe_auto_scaling_groups(AutoScalingGroupNames=["web"])["AutoScalingGroups"][0]
        targets = {name: sorted(d["Target"].get("Port") for d in served["elb"].describe_target_health(
            TargetGroupArn=served[name])["TargetHealthDescriptions"] if d["Target"]["Id"] == served["id"])
            for name in ("web", "admin")}
        return {"state": found[0]["LifecycleState"] if found else None, "desired": group["DesiredCapacity"], **targets}

    def test_out_of_both_after_quarantine_and_back_in_both_after_release(self, ec2, served, evidence_root):
        assert self.placement(served) == {"state": "InService", "desired": 2, "web": [80], "admin": [9000]}
        outcome = quarantine_instance(QuarantineArgs(instance_id=served["id"], isolation_group="irp-isolation"),
                                      make_ctx(evidence_root))
        assert self.placement(served) == {"state": "Standby", "desired": 1, "web": [], "admin": []}
        assert outcome.details["auto_scaling"] == {"group": "web", "how": "standby", "replaced": False}
        assert sorted((r["target_group_arn"], r["port"]) for r in outcome.details["target_groups"]) == sorted(
            [(served["web"], 80), (served["admin"], 9000)])
        assert "standby in Auto Scaling group web" in outcome.message
        assert outcome.undo.args["auto_scaling"] == "standby"
        again = quarantine_instance(QuarantineArgs(instance_id=served["id"], isolation_group="irp-isolation"),
                                    make_ctx(evidence_root))
        assert not again.changed and again.undo == outcome.undo
        released = run_undo(outcome, evidence_root)
        assert released.changed and "back in service in Auto Scaling group web" in released.message
        assert self.placement(served) == {"state": "InService", "desired": 2, "web": [80], "admin": [9000]}
        assert "irp:quarantine" not in state(ec2, served["id"])["tags"]

    def test_a_group_at_its_minimum_detaches_and_release_attaches(self, served, evidence_root):
        served["asg"].update_auto_scaling_group(AutoScalingGroupName="web", MinSize=2)
        outcome = quarantine_instance(QuarantineArgs(instance_id=served["id"], isolation_group="irp-isolation"),
                                      make_ctx(evidence_root))
        assert outcome.details["auto_scaling"] == {"group": "web", "how": "detached", "replaced": True}
        assert self.placement(served)["state"] is None and self.placement(served)["admin"] == []
        served["asg"].update_auto_scaling_group(AutoScalingGroupName="web", MaxSize=4)
        run_undo(outcome, evidence_root)
        assert self.placement(served)["state"] == "InService" and self.placement(served)["admin"] == [9000]

    def test_leave_options_keep_group_and_targets(self, served, evidence_root):
        outcome = quarantine_instance(QuarantineArgs(instance_id=served["id"], isolation_group="irp-isolation",
                                                     leave_auto_scaling=True, leave_target_groups=True),
                                      make_ctx(evidence_root))
        assert outcome.changed and "auto_scaling" not in outcome.details
        assert self.placement(served) == {"state": "InService", "desired": 2, "web": [80], "admin": [9000]}
        assert "auto_scaling" not in outcome.undo.args and "target_groups" not in outcome.undo.args

    def test_dry_run_leaves_group_and_targets(self, served, evidence_root):
        outcome = quarantine_instance(QuarantineArgs(instance_id=served["id"], isolation_group="irp-isolation"),
                                      make_ctx(evidence_root, dry_run=True))
        assert outcome.dry_run and "standby in Auto Scaling group web" in outcome.message
        assert self.placement(served) == {"state": "InService", "desired": 2, "web": [80], "admin": [9000]}

    def test_a_refused_read_is_a_warning_not_a_stop(self, served, fault_proxy, evidence_root):
        fault_proxy.faults = [Fault(query_action("DescribeAutoScalingInstances"), 403,
                                    iam_error("AccessDenied", "not authorized"))]
        outcome = quarantine_instance(QuarantineArgs(instance_id=served["id"], isolation_group="irp-isolation"),
                                      make_ctx(evidence_root))
        assert outcome.changed and any("auto scaling not read" in w for w in outcome.details["warnings"])
        assert self.placement(served)["web"] == [] and self.placement(served)["state"] == "InService"
