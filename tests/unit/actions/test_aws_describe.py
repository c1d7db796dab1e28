"""Enrichment actions against moto's server over HTTP: an access key, an instance, a bucket → facts, archived."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import json

import pytest
from service_fixtures import Fault, aws, boto, fault_proxy, make_ctx, moto_server, query_action  # noqa: F401

from irp.actions.aws.ec2 import InstanceArgs, describe_instance
from irp.actions.aws.iam import DescribeAccessKeyArgs, describe_access_key
from irp.actions.aws.s3 import DescribeBucketArgs, describe_bucket
from irp.errors import PermanentError
from irp.evidence import LocalEvidenceStore
from irp.models import Stage

INLINE = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": "s3:GetObject", "Resource": "*"}]}


def analyse_ctx(root, **kwargs):
    return make_ctx(root, stage=Stage.analyse, step="enrich", **kwargs)


def archived(root, name):
    """An archived JSON item, read through the evidence store."""
    with LocalEvidenceStore(root).open("INC-TEST-0001", name) as handle:
        return json.load(handle)


class TestDescribeAccessKey:
    @pytest.fixture
    def key(self, aws):
        iam = boto("iam", aws)
        iam.create_user(UserName="alice", Tags=[{"Key": "Tenant", "Value": "acme"}, {"Key": "owner", "Value": "bob"}])
        iam.create_group(GroupName="exporters")
        iam.add_user_to_group(GroupName="exporters", UserName="alice")
        arn = iam.create_policy(PolicyName="read-exports", PolicyDocument=json.dumps(INLINE))["Policy"]["Arn"]
        iam.attach_user_policy(UserName="alice", PolicyArn=arn)
        iam.put_user_policy(UserName="alice", PolicyName="extra", PolicyDocument=json.dumps(INLINE))
        iam.create_login_profile(UserName="alice", Password="Initial-Passw0rd!")
        serial = iam.create_virtual_mfa_device(VirtualMFADeviceName="alice")["VirtualMFADevice"]["SerialNumber"]
        iam.enable_mfa_device(UserName="alice", SerialNumber=serial, AuthenticationCode1="123456",
                              AuthenticationCode2="654321")
        return iam.create_access_key(UserName="alice")["AccessKey"]["AccessKeyId"]

    def test_a_key_becomes_its_user_policies_and_tags(self, key, evidence_root):
        outcome = describe_access_key(DescribeAccessKeyArgs(access_key_id=key), analyse_ctx(evidence_root))
        facts = outcome.details
        assert facts["user"] == "alice" and facts["status"] == "Active" and facts["created"] is not None
        assert facts["attached_policies"] == ["read-exports"] and facts["inline_policies"] == {"extra": INLINE}
        assert facts["groups"] == ["exporters"] and facts["console_login"] is True and facts["mfa_devices"] == 1
        assert facts["tenant"] == "acme" and facts["owner"] == "bob"  # tag keys in any case
        assert not outcome.changed and outcome.target == f"iam-user/alice/{key}"
        evidence = archived(evidence_root, facts["evidence"])
        assert evidence["user"] == "alice" and evidence["inline_policies"]["extra"] == INLINE

    def test_an_unknown_key_says_so(self, aws, evidence_root):
        with pytest.raises(PermanentError, match="AKIAAAAAAAAAAAAAAAAA is not a key of this AWS account"):
            describe_access_key(DescribeAccessKeyArgs(access_key_id="AKIAAAAAAAAAAAAAAAAA"), analyse_ctx(evidence_root))

    def test_a_user_without_login_mfa_or_tags(self, aws, evidence_root):
        iam = boto("iam", aws)
        iam.create_user(UserName="svc")
        key = iam.create_access_key(UserName="svc")["AccessKey"]["AccessKeyId"]
        iam.update_access_key(UserName="svc", AccessKeyId=key, Status="Inactive")
        facts = describe_access_key(DescribeAccessKeyArgs(access_key_id=key), analyse_ctx(evidence_root)).details
        assert (facts["status"], facts["console_login"], facts["mfa_devices"], facts["tenant"]) == ("Inactive", False,
                                                                                                  0, None)

    def test_a_root_key_is_said_to_be_one(self, aws, fault_proxy, evidence_root):
        answer = ('<GetAccessKeyLastUsedResponse xmlns="https://iam.amazonaws.com/doc/2010-05-08/">'
                  "<GetAccessKeyLastUsedResult><UserName>root</UserName><AccessKeyLastUsed><Region>eu-west-3</Region>"
                  "<ServiceName>s3</ServiceName><LastUsedDate>2026-12-05T10:00:00Z</LastUsedDate></AccessKeyLastUsed>"
                  "</GetAccessKeyLastUsedResult></GetAccessKeyLastUsedResponse>")
        fault_proxy.faults = [Fault(query_action("GetAccessKeyLastUsed"), 200, answer.encode())]
        outcome = describe_access_key(DescribeAccessKeyArgs(access_key_id="AKIAROOTROOTROOTROOT"),
                                      analyse_ctx(evidence_root))
        assert outcome.details["root"] is True and outcome.details["last_used"]["service"] == "s3"
        assert "root key" in outcome.message

    def test_dry_run_reads_and_archives_nothing(self, key, evidence_root):
        outcome = describe_access_key(DescribeAccessKeyArgs(access_key_id=key), analyse_ctx(evidence_root, dry_run=True))
        assert outcome.dry_run and outcome.details["user"] == "alice" and "evidence" not in outcome.details
        assert LocalEvidenceStore(evidence_root).manifest("INC-TEST-0001") == []


class TestDescribeInstance:
    @pytest.fixture
    def fleet(self, aws):
        """An Auto Scaling group of one instance, registered in a target group of its VPC, tagged, with a profile."""
        ec2, asg, elbv2, iam = (boto(s, aws) for s in ("ec2", "autoscaling", "elbv2", "iam"))
        vpc = ec2.describe_vpcs()["Vpcs"][0]["VpcId"]
        subnet = ec2.describe_subnets(Filters=[{"Name": "vpc-id", "Values": [vpc]}])["Subnets"][0]["SubnetId"]
        template = ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={
            "ImageId": "ami-12345678", "InstanceType": "t3.micro"})
        asg.create_auto_scaling_group(AutoScalingGroupName="web-asg", MinSize=1, MaxSize=1, DesiredCapacity=1,
                                      VPCZoneIdentifier=subnet, LaunchTemplate={
                                          "LaunchTemplateId": template["LaunchTemplate"]["LaunchTemplateId"]})
        instance_id = asg.describe_auto_scaling_instances()["AutoScalingInstances"][0]["InstanceId"]
        profile = iam.create_instance_profile(InstanceProfileName="web")["InstanceProfile"]
        ec2.associate_iam_instance_profile(InstanceId=instance_id, IamInstanceProfile={"Arn": profile["Arn"]})
        ec2.create_tags(Resources=[instance_id], Tags=[{"Key": "tenant", "Value": "acme"},
                                                       {"Key": "Owner", "Value": "team-web"}])
        group = elbv2.create_target_group(Name="web", Protocol="HTTP", Port=80, VpcId=vpc,
                                          TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
        elbv2.create_target_group(Name="other", Protocol="HTTP", Port=80, VpcId=vpc, TargetType="instance")
        elbv2.register_targets(TargetGroupArn=group, Targets=[{"Id": instance_id, "Port": 8080}])
        lone = ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1)["Instances"][0]["InstanceId"]
        return {"id": instance_id, "vpc": vpc, "subnet": subnet, "group": group, "lone": lone}

    def test_an_instance_becomes_its_group_target_groups_and_tags(self, fleet, evidence_root):
        outcome = describe_instance(InstanceArgs(instance_id=fleet["id"]), analyse_ctx(evidence_root))
        facts = outcome.details
        assert facts["auto_scaling_group"] == "web-asg" and facts["auto_scaling_state"] == "InService"
        assert [(g["arn"], g["port"]) for g in facts["target_groups"]] == [(fleet["group"], 8080)]
        assert (facts["vpc_id"], facts["subnet_id"]) == (fleet["vpc"], fleet["subnet"])
        assert facts["instance_profile"].endswith("instance-profile/web")
        assert facts["tenant"] == "acme" and facts["owner"] == "team-web" and facts["launch_time"]
        assert archived(evidence_root, facts["evidence"])["auto_scaling_group"] == "web-asg"

    def test_a_lone_instance_has_no_group(self, fleet, evidence_root):
        facts = describe_instance(InstanceArgs(instance_id=fleet["lone"]), analyse_ctx(evidence_root)).details
        assert facts["auto_scaling_group"] is None and facts["target_groups"] == [] and facts["tenant"] is None

    def test_an_unknown_instance_says_so(self, aws, evidence_root):
        with pytest.raises(PermanentError, match="i-0123456789abcdef0"):
            describe_instance(InstanceArgs(instance_id="i-0123456789abcdef0"), analyse_ctx(evidence_root))


class TestDescribeBucket:
    def test_a_bucket_becomes_its_tags_and_protections(self, aws, evidence_root, monkeypatch):
        from irp.settings import get_settings

        monkeypatch.setenv("IRP_AWS_TENANT_TAG", "client")
        get_settings.cache_clear()
        s3 = boto("s3", aws)
        for name in ("exports", "access-logs"):
            s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": "eu-west-3"})
        s3.put_bucket_tagging(Bucket="exports", Tagging={"TagSet": [{"Key": "client", "Value": "acme"},
                                                                    {"Key": "data-classification", "Value": "personal"}]})
        s3.put_bucket_versioning(Bucket="exports", VersioningConfiguration={"Status": "Enabled"})
        s3.put_bucket_acl(Bucket="access-logs", ACL="log-delivery-write")
        s3.put_bucket_logging(Bucket="exports", BucketLoggingStatus={"LoggingEnabled": {
            "TargetBucket": "access-logs", "TargetPrefix": "exports/"}})
        s3.put_bucket_policy(Bucket="exports", Policy=json.dumps({"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::exports/*"}]}))
        s3.put_bucket_encryption(Bucket="exports", ServerSideEncryptionConfiguration={"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        outcome = describe_bucket(DescribeBucketArgs(bucket="exports"), analyse_ctx(evidence_root))
        facts = outcome.details
        assert facts["tenant"] == "acme" and facts["data_classification"] == "personal"
        assert facts["versioning"] == "Enabled" and facts["region"] == "eu-west-3"
        assert facts["access_logging"] == {"target_bucket": "access-logs", "target_prefix": "exports/",
                                           "partitioned": False}
        assert facts["has_policy"] and facts["policy_public"] and facts["public_access_block"] is None
        assert facts["encryption"] == [{"SSEAlgorithm": "AES256"}] and facts["object_lock"] is None
        assert "policy public" in outcome.message
        assert archived(evidence_root, facts["evidence"])["tenant"] == "acme"

    def test_a_plain_bucket(self, aws, evidence_root):
        s3 = boto("s3", aws)
        s3.create_bucket(Bucket="plain", CreateBucketConfiguration={"LocationConstraint": "eu-west-3"},
                         ObjectLockEnabledForBucket=True)
        s3.put_public_access_block(Bucket="plain", PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True})
        facts = describe_bucket(DescribeBucketArgs(bucket="plain"), analyse_ctx(evidence_root)).details
        assert facts["tenant"] is None and facts["tags"] == {} and facts["access_logging"] is None
        assert facts["has_policy"] is False and facts["policy_public"] is False
        assert facts["public_access_block"]["BlockPublicPolicy"] is True
        assert facts["object_lock"]["ObjectLockEnabled"] == "Enabled"

    def test_a_missing_bucket_says_so(self, aws, evidence_root):
        with pytest.raises(PermanentError, match="no S3 bucket nowhere"):
            describe_bucket(DescribeBucketArgs(bucket="nowhere"), analyse_ctx(evidence_root))
