"""What the sample-driven end-to-end tests share: the AWS a sample names, built in moto; a person who
approves every paused run; a sample read and routed as the intake would; the step records of a run.

Import from a test module that also imports the service_fixtures fixtures (aws, fault_proxy).
"""

from __future__ import annotations

import json
import threading
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterState, FlowRunFilterStateName
from prefect.client.schemas.sorting import FlowRunSort
from prefect.flow_runs import resume_flow_run
from service_fixtures import REGION, Fault, boto, json_target

from irp.intake.routing import Router
from irp.intake.sources import SOURCES, alerts_in
from irp.models import Alert, IncidentType, TargetKind

REPO = Path(__file__).resolve().parents[2]
AWS_SAMPLES = REPO / "playbooks" / "samples" / "aws"
SAMPLE_KEY = "AKIAIOSFODNN7EXAMPLE"  # the access key id the AWS samples name
SAMPLE_INSTANCE = "i-0abcd1234ef567890"  # the instance id they name
LOCATION = {"LocationConstraint": REGION}


class Cloud:
    """The resources a sample names, created in moto under the sample's names (or its ids swapped for moto's)."""

    def __init__(self, endpoint: str, proxy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.endpoint, self.proxy = endpoint, proxy
        self.iam, self.s3, self.ec2 = boto("iam", endpoint), boto("s3", endpoint), boto("ec2", endpoint)
        self.key = self.user = self.instance = ""
        self.asg = self.elb = None
        self.target_group = ""
        self.s3.create_bucket(Bucket="irp-trail-logs", CreateBucketConfiguration=LOCATION)
        self.s3.create_bucket(Bucket="irp-access-logs", CreateBucketConfiguration=LOCATION)
        self.s3.put_bucket_acl(Bucket="irp-access-logs", ACL="log-delivery-write")
        logs = boto("logs", endpoint)
        for group in ("vpc-flow-logs", "aws-waf-logs-edge"):
            logs.create_log_group(logGroupName=group)
        wafv2 = boto("wafv2", endpoint)
        ip_set = wafv2.create_ip_set(Name="edge-blocklist", Scope="REGIONAL", IPAddressVersion="IPV4",
                                     Addresses=[])["Summary"]["ARN"]
        self.web_acl = wafv2.create_web_acl(Name="edge", Scope="REGIONAL", DefaultAction={"Allow": {}},
                                            VisibilityConfig={"SampledRequestsEnabled": False,
                                                              "CloudWatchMetricsEnabled": False,
                                                              "MetricName": "edge"})["Summary"]["ARN"]
        monkeypatch.setenv("IRP_AWS_WAF_IP_SET_ARN", ip_set)
        monkeypatch.setenv("IRP_AWS_WAF_WEB_ACL_ARN", self.web_acl)
        monkeypatch.setenv("IRP_AWS_ISOLATION_SECURITY_GROUP", "irp-isolation")
        # The deployment lets alert data choose every kind of target: only the playbooks' own approvals wait.
        monkeypatch.setenv("IRP_ACTION_TARGETS", json.dumps({kind.value: {"allow": ["0.0.0.0/0"] if kind == "cidr"
                                                                         else ["*"]} for kind in TargetKind}))

    def user_key(self, user: str) -> str:
        """An IAM user and its access key (the sample's key id becomes this one)."""
        self.user = user
        self.iam.create_user(UserName=user)
        self.key = self.iam.create_access_key(UserName=user)["AccessKey"]["AccessKeyId"]
        return self.key

    def bucket(self, name: str) -> None:
        """The bucket, its server access logging and a trail that logs its S3 data events."""
        self.s3.create_bucket(Bucket=name, CreateBucketConfiguration=LOCATION)
        self.s3.put_bucket_logging(Bucket=name, BucketLoggingStatus={"LoggingEnabled": {
            "TargetBucket": "irp-access-logs", "TargetPrefix": f"{name}/"}})
        cloudtrail = boto("cloudtrail", self.endpoint)
        trail = f"data-{name}"[:60]
        cloudtrail.create_trail(Name=trail, S3BucketName="irp-trail-logs")
        cloudtrail.put_event_selectors(TrailName=trail, EventSelectors=[{
            "ReadWriteType": "All", "IncludeManagementEvents": True,
            "DataResources": [{"Type": "AWS::S3::Object", "Values": [f"arn:aws:s3:::{name}/"]}]}])

    def served_instance(self) -> str:
        """An instance in service in an Auto Scaling group and a target group (as a platform's web tier is)."""
        subnet = self.ec2.describe_subnets()["Subnets"][0]
        vpc = subnet["VpcId"]
        self.elb = boto("elbv2", self.endpoint)
        self.target_group = self.elb.create_target_group(Name="web", Protocol="HTTP", Port=80, VpcId=vpc,
                                                         TargetType="instance")["TargetGroups"][0]["TargetGroupArn"]
        self.asg = boto("autoscaling", self.endpoint)
        self.ec2.create_launch_template(LaunchTemplateName="web", LaunchTemplateData={
            "ImageId": "ami-12345678", "InstanceType": "t3.micro",
            "BlockDeviceMappings": [{"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}]})
        self.asg.create_auto_scaling_group(AutoScalingGroupName="web", LaunchTemplate={"LaunchTemplateName": "web"},
                                           MinSize=1, MaxSize=3, DesiredCapacity=2,
                                           VPCZoneIdentifier=subnet["SubnetId"], TargetGroupARNs=[self.target_group])
        self.instance = self.asg.describe_auto_scaling_groups()["AutoScalingGroups"][0]["Instances"][0]["InstanceId"]
        self.ec2.create_security_group(GroupName="irp-isolation", Description="no traffic", VpcId=vpc)
        return self.instance

    def placement(self) -> dict[str, Any]:
        """Where the instance is: its Auto Scaling lifecycle state and whether the target group holds it."""
        found = self.asg.describe_auto_scaling_instances(InstanceIds=[self.instance])["AutoScalingInstances"]
        targets = self.elb.describe_target_health(TargetGroupArn=self.target_group)["TargetHealthDescriptions"]
        return {"state": found[0]["LifecycleState"] if found else None,
                "in_target_group": any(t["Target"]["Id"] == self.instance for t in targets)}

    def key_status(self) -> str:
        return self.iam.list_access_keys(UserName=self.user)["AccessKeyMetadata"][0]["Status"]

    def trail_events(self, *names: str) -> list[dict[str, Any]]:
        """CloudTrail management events of the key (moto has no LookupEvents: the proxy answers it)."""
        events = [{"EventId": f"ev-{i}", "EventName": name, "EventTime": 1764590000 + i, "Username": self.user,
                   "AccessKeyId": self.key, "EventSource": "iam.amazonaws.com",
                   "CloudTrailEvent": json.dumps({"eventName": name, "sourceIPAddress": "198.51.100.23"})}
                  for i, name in enumerate(names)]
        self.proxy.faults.append(Fault(json_target("LookupEvents"), 200, json.dumps({"Events": events}).encode(),
                                       content_type="application/x-amz-json-1.1", times=1000))
        return events


def prepare(cloud: Cloud, text: str) -> str:
    """Build in moto what a sample names; its text with the key and instance ids moto gave."""
    if SAMPLE_KEY in text:
        text = text.replace(SAMPLE_KEY, cloud.user_key("key-owner"))
        cloud.trail_events("ListBuckets", "CreateUser", "CreateAccessKey")
    if SAMPLE_INSTANCE in text:
        text = text.replace(SAMPLE_INSTANCE, cloud.served_instance())
    for bucket in ("callcenterrate-recordings", "callcenterrate-exports"):
        if bucket in text:
            cloud.bucket(bucket)
    return text


def routed(source: str, body: str | bytes) -> tuple[Alert, IncidentType, str | None]:
    """The alert of a body as the intake reads and routes it: (alert with its mapped labels, type, severity hint)."""
    [(alert, event)] = alerts_in(SOURCES[source], body.encode() if isinstance(body, str) else body)
    [(alert, route, _)] = Router.from_file(REPO / "playbooks" / "routing.yaml").route_all([(alert, event)])
    assert route is not None, f"{alert.title}: unrouted"
    return alert, route.incident_type, route.severity.value if route.severity else None


class Approver:
    """A person who approves every paused flow run on the server (the playbooks' approval steps)."""

    def __init__(self) -> None:
        self.approved: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Approver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        # "Paused" only: "Suspended" runs are stages waiting for people (irp/engine/waits.py), not gates, and a
        # session's server holds more of them than one page returns
        paused = FlowRunFilter(state=FlowRunFilterState(name=FlowRunFilterStateName(any_=["Paused"])))
        while not self._stop.wait(0.5):
            with get_client(sync_client=True) as client:
                runs = client.read_flow_runs(flow_run_filter=paused, sort=FlowRunSort.START_TIME_DESC, limit=20)
            for run in runs:
                try:
                    resume_flow_run(run.id, run_input={"decision": "approve", "approver": "Test Approver",
                                                       "reason": "end-to-end test"})
                    self.approved.append(str(run.id))
                except Exception:  # noqa: BLE001 (not waiting for input yet, or already resumed: next poll)
                    continue


def step_records(evidence_root: Path, incident_id: str) -> list[dict[str, Any]]:
    """The archived step records of an incident, in the order the steps ran."""
    records = [json.loads(p.read_text()) for p in (evidence_root / incident_id / "objects" / "steps").rglob("*.json")]
    return sorted(records, key=lambda r: datetime.fromisoformat(r["started_at"]))
