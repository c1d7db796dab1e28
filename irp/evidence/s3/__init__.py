"""The S3 evidence store (`IRP_EVIDENCE_URL=s3://bucket/prefix`): AWS S3, MinIO or Ceph RGW through boto3.

    s3://bucket/prefix/<incident>/objects/<name>          the items: write-once, SHA-256, SSE, Object Lock
    s3://bucket/prefix/<incident>/manifest/<name>.json    one manifest entry per item (write-once)
    s3://bucket/prefix/<incident>/custody/<seq>.json      the custody log, one entry per object (custody.py)
    s3://bucket/prefix/<incident>/incident.json           the incident record, updated in place
    s3://bucket/prefix/<incident>/events/<id>.json        timeline entries appended from outside the run

The endpoint comes from AWS_ENDPOINT_URL (or AWS_ENDPOINT_URL_S3), credentials from the standard AWS
chain. Write-once objects are created with `If-None-Match: *`; items of a part or more go up as a
multipart upload, parts in parallel, while one pass computes the SHA-256 (memory: about
concurrency + 1 parts). When the bucket has Object Lock, every write-once object gets the retention
of the incident's severity. When the store cannot be reached, writes go to a local spool (spool.py)
that a background thread uploads with backoff, and `irp evidence flush` on demand.
"""

from irp.evidence.s3.store import S3EvidenceStore

__all__ = ["S3EvidenceStore"]
