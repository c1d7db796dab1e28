"""Evidence collection against moto's server over HTTP: S3 data events from a trail's log files, S3 access
logs, a Logs Insights query, an instance's console output, description and snapshots."""

from __future__ import annotations

# ruff: noqa: F811  (pytest fixtures imported from service_fixtures are parameters here)
import base64
import gzip
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError
from service_fixtures import (  # noqa: F401  (fixtures)
    Fault,
    aws,
    boto,
    events,
    fault_proxy,
    json_target,
    make_ctx,
    moto_server,
    query_action,
)

from irp.actions.aws.cloudtrail import S3DataEventsArgs, collect_s3_data_events
from irp.actions.aws.ec2 import InstanceStateArgs, collect_instance_state
from irp.actions.aws.logs import LogsInsightsArgs, query_logs_insights
from irp.actions.aws.s3 import AccessLogsArgs, collect_s3_access_logs
from irp.errors import InvalidArgumentsError, PermanentError
from irp.evidence import LocalEvidenceStore
from irp.models import Stage

ACCOUNT = "123456789012"  # moto's
START, END = datetime(2026, 12, 5, 8, tzinfo=UTC), datetime(2026, 12, 5, 12, tzinfo=UTC)
LOCATION = {"LocationConstraint": "eu-west-3"}


def ctx(root, step="collect", **kwargs):
    return make_ctx(root, stage=Stage.analyse, step=step, **kwargs)


def archived(root, name) -> bytes:
    with LocalEvidenceStore(root).open("INC-TEST-0001", name) as handle:
        return handle.read()


def record(name, at, *, bucket="exports", key="clients/acme.csv", user="alice", category="Data", **extra):
    return {"eventTime": at, "eventSource": "s3.amazonaws.com", "eventName": name, "eventCategory": category,
            "sourceIPAddress": "203.0.113.9", "requestParameters": {"bucketName": bucket, "key": key},
            "userIdentity": {"type": "IAMUser", "userName": user, "arn": f"arn:aws:iam::{ACCOUNT}:user/{user}",
                             "accessKeyId": f"AKIA{user.upper():0<16}"}, **extra}


class TestS3DataEvents:
    @pytest.fixture
    def trail(self, aws):
        """A management-only trail, then one logging exports' data events, with three delivered log files."""
        s3, cloudtrail = boto("s3", aws), boto("cloudtrail", aws)
        for name in ("exports", "trail-logs"):
            s3.create_bucket(Bucket=name, CreateBucketConfiguration=LOCATION)
        cloudtrail.create_trail(Name="mgmt-trail", S3BucketName="trail-logs")
        cloudtrail.create_trail(Name="data-trail", S3BucketName="trail-logs", S3KeyPrefix="ct")
        cloudtrail.put_event_selectors(TrailName="data-trail", EventSelectors=[{
            "ReadWriteType": "All", "IncludeManagementEvents": True,
            "DataResources": [{"Type": "AWS::S3::Object", "Values": ["arn:aws:s3:::exports/"]}]}])
        day = f"ct/AWSLogs/{ACCOUNT}/CloudTrail/eu-west-3/2026/12/05/"
        files = {
            "20261205T1010Z": [
                record("GetObject", "2026-12-05T09:58:00Z",
                       additionalEventData={"x-amz-security-token": "IQoJb3JpZ2luX2VjEXAMPLE"}),
                record("PutObject", "2026-12-05T10:01:00Z", user="bob", key="tmp/x"),
                record("GetObject", "2026-12-05T10:02:00Z", bucket="other"),
                record("PutBucketPolicy", "2026-12-05T10:03:00Z", category="Management"),
                record("GetObject", "2026-12-05T07:55:00Z"),  # before the window
            ],
            "20261205T1255Z": [record("DeleteObject", "2026-12-05T11:59:00Z", key="clients/beta.csv")],
            "20261205T1500Z": [record("GetObject", "2026-12-05T11:00:00Z")],  # delivered too late to hold the window
        }
        for stamp, records in files.items():
            s3.put_object(Bucket="trail-logs", Key=f"{day}{ACCOUNT}_CloudTrail_eu-west-3_{stamp}_abc.json.gz",
                          Body=gzip.compress(json.dumps({"Records": records}).encode()))
        return s3

    def test_keeps_the_buckets_data_events_of_the_window(self, trail, evidence_root):
        outcome = collect_s3_data_events(S3DataEventsArgs(bucket="exports", start=START, end=END), ctx(evidence_root))
        details = outcome.details
        assert details["trail"].endswith(":trail/data-trail") and details["files"] == 2
        assert details["count"] == 3 and not details["truncated"]
        assert details["event_names"] == {"GetObject": 1, "PutObject": 1, "DeleteObject": 1}
        assert (details["first"], details["last"]) == ("2026-12-05T09:58:00Z", "2026-12-05T11:59:00Z")
        assert set(details["principals"]) == {f"arn:aws:iam::{ACCOUNT}:user/alice", f"arn:aws:iam::{ACCOUNT}:user/bob"}
        evidence = json.loads(archived(evidence_root, details["evidence"]))
        assert [e["eventName"] for e in evidence["events"]] == ["GetObject", "PutObject", "DeleteObject"]
        assert evidence["events"][0]["additionalEventData"]["x-amz-security-token"] == "***redacted***"
        assert len(evidence["source"]["files"]) == 2 and evidence["source"]["log_bucket"] == "trail-logs"

    def test_filters_by_principal_and_key_prefix(self, trail, evidence_root):
        outcome = collect_s3_data_events(S3DataEventsArgs(bucket="exports", principal="alice", key_prefix="clients/",
                                                          start=START, end=END), ctx(evidence_root))
        assert outcome.details["event_names"] == {"GetObject": 1, "DeleteObject": 1}
        assert outcome.details["keys"] == ["clients/acme.csv", "clients/beta.csv"]

    def test_bounded_by_events_and_by_files(self, trail, evidence_root):
        few = collect_s3_data_events(S3DataEventsArgs(bucket="exports", max_events=1, start=START, end=END),
                                     ctx(evidence_root))
        assert few.details["count"] == 1 and few.details["truncated"] and "(truncated)" in few.message
        one_file = collect_s3_data_events(S3DataEventsArgs(bucket="exports", max_objects=1, start=START, end=END),
                                          ctx(evidence_root, step="again"))
        assert one_file.details["files"] == 1 and one_file.details["truncated"]

    def test_an_advanced_selector_trail_is_found(self, trail, evidence_root):
        boto("cloudtrail", trail.meta.endpoint_url).put_event_selectors(TrailName="data-trail", AdvancedEventSelectors=[
            {"Name": "exports", "FieldSelectors": [
                {"Field": "eventCategory", "Equals": ["Data"]}, {"Field": "resources.type", "Equals": ["AWS::S3::Object"]},
                {"Field": "resources.ARN", "StartsWith": ["arn:aws:s3:::exports/clients/"]}]}])
        outcome = collect_s3_data_events(S3DataEventsArgs(bucket="exports", key_prefix="clients/", start=START, end=END),
                                         ctx(evidence_root))
        assert outcome.details["trail"].endswith(":trail/data-trail") and outcome.details["count"] == 2

    def test_no_trail_logs_the_bucket(self, trail, evidence_root):
        trail.create_bucket(Bucket="unlogged", CreateBucketConfiguration=LOCATION)
        with pytest.raises(PermanentError, match="no CloudTrail trail logs S3 data events for bucket unlogged"):
            collect_s3_data_events(S3DataEventsArgs(bucket="unlogged", start=START, end=END), ctx(evidence_root))

    def test_dry_run_lists_and_reads_nothing(self, trail, evidence_root):
        outcome = collect_s3_data_events(S3DataEventsArgs(bucket="exports", start=START, end=END),
                                         ctx(evidence_root, dry_run=True))
        assert outcome.dry_run and outcome.details["files"] == 2 and outcome.details["count"] == 0
        assert LocalEvidenceStore(evidence_root).manifest("INC-TEST-0001") == []

    def test_an_empty_window_is_refused(self, aws, evidence_root):
        with pytest.raises(PermanentError, match="the window is empty"):
            collect_s3_data_events(S3DataEventsArgs(bucket="exports", start=END, end=START), ctx(evidence_root))


def access_line(at: str, operation: str, uri: str) -> str:
    return (f'79a5owner exports [{at}] 203.0.113.9 arn:aws:iam::{ACCOUNT}:user/alice REQ1 {operation} clients/acme.csv '
            f'"{uri}" 200 - 1024 1024 10 9 "-" "curl/8.0" - hostid SigV4 ECDHE AuthHeader exports.s3.amazonaws.com TLSv1.3')


class TestS3AccessLogs:
    @pytest.fixture
    def logged(self, aws):
        s3 = boto("s3", aws)
        for name in ("exports", "access-logs"):
            s3.create_bucket(Bucket=name, CreateBucketConfiguration=LOCATION)
        s3.put_bucket_acl(Bucket="access-logs", ACL="log-delivery-write")
        s3.put_bucket_logging(Bucket="exports", BucketLoggingStatus={"LoggingEnabled": {
            "TargetBucket": "access-logs", "TargetPrefix": "exports/"}})
        s3.put_object(Bucket="access-logs", Key="exports/2026-12-05-10-15-00-ABCDEF", Body="\n".join([
            access_line("05/Dec/2026:10:01:02 +0000", "REST.GET.OBJECT",
                        "GET /exports/clients/acme.csv?X-Amz-Signature=deadbeefcafe&X-Amz-Expires=60 HTTP/1.1"),
            access_line("05/Dec/2026:07:00:00 +0000", "REST.PUT.OBJECT", "PUT /exports/old HTTP/1.1"),
        ]).encode())
        s3.put_object(Bucket="access-logs", Key="exports/2026-12-05-16-00-00-LATE00",
                      Body=access_line("05/Dec/2026:11:00:00 +0000", "REST.DELETE.OBJECT", "DELETE /x HTTP/1.1").encode())
        return s3

    def test_archives_the_windows_records_redacted(self, logged, evidence_root):
        outcome = collect_s3_access_logs(AccessLogsArgs(bucket="exports", start=START, end=END), ctx(evidence_root))
        details = outcome.details
        assert (details["count"], details["objects"], details["truncated"]) == (1, 1, False)
        assert details["operations"] == {"REST.GET.OBJECT": 1} and details["remote_ips"] == ["203.0.113.9"]
        text = archived(evidence_root, details["records"]).decode()
        assert "REST.GET.OBJECT" in text and "REST.PUT.OBJECT" not in text and "REST.DELETE.OBJECT" not in text
        assert "deadbeefcafe" not in text and "X-Amz-Signature=***redacted***" in text
        listing = json.loads(archived(evidence_root, details["evidence"]))
        assert [o["key"] for o in listing["objects"]] == ["exports/2026-12-05-10-15-00-ABCDEF"]

    def test_bounded_by_objects(self, logged, evidence_root):
        logged.put_object(Bucket="access-logs", Key="exports/2026-12-05-11-00-00-SECOND",
                          Body=access_line("05/Dec/2026:10:59:00 +0000", "REST.HEAD.OBJECT", "HEAD /x HTTP/1.1").encode())
        outcome = collect_s3_access_logs(AccessLogsArgs(bucket="exports", max_objects=1, start=START, end=END),
                                         ctx(evidence_root))
        assert outcome.details["objects"] == 1 and outcome.details["truncated"]

    def test_a_bucket_without_logging_says_so(self, logged, evidence_root):
        with pytest.raises(PermanentError, match="bucket access-logs has no server access logging"):
            collect_s3_access_logs(AccessLogsArgs(bucket="access-logs", start=START, end=END), ctx(evidence_root))


class TestLogsInsights:
    @pytest.fixture
    def group(self, aws):
        logs = boto("logs", aws)
        logs.create_log_group(logGroupName="vpc-flow-logs")
        logs.create_log_stream(logGroupName="vpc-flow-logs", logStreamName="eni-1")
        now = int(datetime.now(UTC).timestamp() * 1000)
        logs.put_log_events(logGroupName="vpc-flow-logs", logStreamName="eni-1", logEvents=[
            {"timestamp": now - 2000, "message": "2 123456789012 eni-1 203.0.113.9 10.0.0.5 443 51000 6 10 840 ACCEPT"},
            {"timestamp": now - 1000, "message": "password=hunter2 from app"}])
        return logs

    def args(self, **extra):
        return LogsInsightsArgs(log_groups="vpc-flow-logs", lookback_hours=1,
                                query="fields @timestamp, @message | filter @message like ${ip}",
                                values={"ip": '203.0.113.9" | stats count(*)'}, **extra)

    def test_runs_and_archives_the_query_and_its_results(self, group, evidence_root):
        outcome = query_logs_insights(self.args(), ctx(evidence_root))
        assert outcome.details["status"] == "Complete" and outcome.details["count"] == 2
        assert all("@ptr" not in row for row in outcome.details["results"])
        evidence = json.loads(archived(evidence_root, outcome.details["evidence"]))
        assert evidence["query"] == "fields @timestamp, @message | filter @message like ${ip}"
        assert evidence["query_sent"] == 'fields @timestamp, @message | filter @message like "203.0.113.9\\" | stats count(*)"'
        assert evidence["values"] == {"ip": '203.0.113.9" | stats count(*)'}
        assert "hunter2" not in json.dumps(evidence)  # application logs are redacted too

    def test_values_are_escaped_literals(self):
        args = LogsInsightsArgs(log_groups="g", query="filter a in ${ips} and b = ${port} and c = ${path}",
                                values={"ips": ["10.0.0.1", 'x"y'], "port": 443, "path": "C:\\tmp"})
        assert args.rendered() == 'filter a in ["10.0.0.1", "x\\"y"] and b = 443 and c = "C:\\\\tmp"'

    @pytest.mark.parametrize(("query", "values", "message"), [
        ("filter a = ${ip}", {}, "query placeholders without a value: ip"),
        ("filter a = 1", {"ip": "x"}, "values not used by the query"),
        ("filter a = ${ip}", {"ip": "x\n| stats count(*)"}, "values.ip: .* control character"),
        ("filter a = ${ip}", {"ip": True}, "values.ip"),
        ("filter a = ${ip}", {"ip": float("nan")}, "values.ip: nan is not a string or a finite number"),
    ])
    def test_bad_placeholders_are_refused(self, query, values, message):
        with pytest.raises(ValidationError, match=message):
            LogsInsightsArgs(log_groups="g", query=query, values=values)

    def test_a_query_built_from_run_data_is_refused(self, group, evidence_root):
        context = ctx(evidence_root)
        context.from_run_data = frozenset({"query"})
        with pytest.raises(InvalidArgumentsError, match="pass those values in `values`"):
            query_logs_insights(self.args(), context)

    def test_a_query_still_running_at_the_deadline_is_stopped_and_kept(self, group, fault_proxy, evidence_root):
        fault_proxy.faults = [Fault(json_target("GetQueryResults"), 200, json.dumps({
            "status": "Running", "results": [[{"field": "@message", "value": "partial"}]]}).encode(),
            content_type="application/x-amz-json-1.1", times=100)]
        outcome = query_logs_insights(self.args(wait_seconds=1), ctx(evidence_root))
        assert outcome.details["status"] == "Running" and outcome.details["truncated"]
        assert outcome.details["results"] == [{"@message": "partial"}] and "stopped" in outcome.message
        assert fault_proxy.count("StopQuery") >= 1  # moto has no StopQuery (500): the failure is noted, not raised

    def test_a_failed_query_fails_the_step(self, group, fault_proxy, evidence_root):
        fault_proxy.faults = [Fault(json_target("GetQueryResults"), 200, b'{"status": "Failed", "results": []}',
                                    content_type="application/x-amz-json-1.1")]
        with pytest.raises(PermanentError, match="failed on vpc-flow-logs"):
            query_logs_insights(self.args(), ctx(evidence_root))

    def test_dry_run_starts_no_query(self, group, fault_proxy, evidence_root):
        outcome = query_logs_insights(self.args(), ctx(evidence_root, dry_run=True))
        assert outcome.dry_run and fault_proxy.count("StartQuery") == 0
        with pytest.raises(PermanentError, match="no log group missing"):
            query_logs_insights(LogsInsightsArgs(log_groups="missing", query="fields @message"),
                                ctx(evidence_root, dry_run=True))


class TestInstanceState:
    @pytest.fixture
    def instance(self, aws):
        ec2 = boto("ec2", aws)
        return ec2.run_instances(ImageId="ami-12345678", MinCount=1, MaxCount=1, BlockDeviceMappings=[
            {"DeviceName": "/dev/sda1", "Ebs": {"VolumeSize": 8}}])["Instances"][0]["InstanceId"]

    def snapshots(self, aws, instance_id):
        return boto("ec2", aws).describe_snapshots(OwnerIds=["self"], Filters=[
            {"Name": "tag:irp:instance", "Values": [instance_id]}])["Snapshots"]

    def test_console_output_then_description_then_snapshots(self, aws, instance, evidence_root):
        outcome = collect_instance_state(InstanceStateArgs(instance_id=instance), ctx(evidence_root))
        assert outcome.changed and len(outcome.details["snapshot_ids"]) == 1
        assert [s["SnapshotId"] for s in self.snapshots(aws, instance)] == outcome.details["snapshot_ids"]
        state = json.loads(archived(evidence_root, outcome.details["evidence"]))
        assert state["console_output"] and state["instance"]["InstanceId"] == instance
        names = [i.name for i in LocalEvidenceStore(evidence_root).manifest("INC-TEST-0001")]
        assert names.index(outcome.details["evidence"]) < min(i for i, n in enumerate(names) if "-volumes/" in n)

    def test_without_snapshots(self, aws, instance, evidence_root):
        outcome = collect_instance_state(InstanceStateArgs(instance_id=instance, snapshot=False), ctx(evidence_root))
        assert not outcome.changed and self.snapshots(aws, instance) == []

    def test_console_output_is_decoded_and_redacted(self, aws, instance, fault_proxy, evidence_root):
        text = "cloud-init: db_password=hunter2\nboot finished\n"
        body = (f'<GetConsoleOutputResponse xmlns="http://ec2.amazonaws.com/doc/2016-11-15/"><requestId>r</requestId>'
                f'<instanceId>{instance}</instanceId><timestamp>2026-12-05T10:00:00.000Z</timestamp>'
                f'<output>{base64.b64encode(text.encode()).decode()}</output></GetConsoleOutputResponse>').encode()
        fault_proxy.faults = [Fault(query_action("GetConsoleOutput"), 200, body)]
        outcome = collect_instance_state(InstanceStateArgs(instance_id=instance, snapshot=False), ctx(evidence_root))
        console = json.loads(archived(evidence_root, outcome.details["evidence"]))["console_output"]
        assert console == "cloud-init: db_password=***redacted***\nboot finished\n"

    def test_dry_run_snapshots_nothing_and_archives_nothing(self, aws, instance, evidence_root):
        outcome = collect_instance_state(InstanceStateArgs(instance_id=instance), ctx(evidence_root, dry_run=True))
        assert outcome.dry_run and "create_snapshot: allowed (AWS DryRun)" in outcome.checks
        assert self.snapshots(aws, instance) == []
        assert [i.name for i in LocalEvidenceStore(evidence_root).manifest("INC-TEST-0001")
                if "/dry-run/" not in i.name] == []  # aws.snapshot_volumes journals its dry run apart


def test_access_logs_with_date_partitioned_keys(aws, fault_proxy, evidence_root):
    """moto drops TargetObjectKeyFormat: the proxy answers GetBucketLogging as AWS does."""
    s3 = boto("s3", aws)
    for name in ("exports", "access-logs"):
        s3.create_bucket(Bucket=name, CreateBucketConfiguration=LOCATION)
    logging = ('<BucketLoggingStatus xmlns="http://doc.s3.amazonaws.com/2006-03-01"><LoggingEnabled>'
               "<TargetBucket>access-logs</TargetBucket><TargetPrefix>s3/</TargetPrefix><TargetObjectKeyFormat>"
               "<PartitionedPrefix><PartitionDateSource>EventTime</PartitionDateSource></PartitionedPrefix>"
               "</TargetObjectKeyFormat></LoggingEnabled></BucketLoggingStatus>")
    fault_proxy.faults = [Fault(lambda method, path, headers, body: method == "GET" and path == "/exports", 200,
                                logging.encode(), content_type="application/xml")]  # the first GET: GetBucketLogging
    s3.put_object(Bucket="access-logs", Key=f"s3/{ACCOUNT}/eu-west-3/exports/2026/12/05/2026-12-05-10-00-00-P1",
                  Body=access_line("05/Dec/2026:09:30:00 +0000", "REST.GET.OBJECT", "GET /x HTTP/1.1").encode())
    s3.put_object(Bucket="access-logs", Key="s3/2026-12-05-10-00-00-SIMPLE",  # the other layout: not this bucket's
                  Body=access_line("05/Dec/2026:09:31:00 +0000", "REST.PUT.OBJECT", "PUT /x HTTP/1.1").encode())
    outcome = collect_s3_access_logs(AccessLogsArgs(bucket="exports", start=START, end=END), ctx(evidence_root))
    assert (outcome.details["count"], outcome.details["objects"]) == (1, 1)
    assert outcome.details["operations"] == {"REST.GET.OBJECT": 1}
