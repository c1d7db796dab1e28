"""Containment, evidence and restore actions on AWS (namespace `aws`), one module per service (policy §6).

Side effects, only when the step is not a dry run: IAM access keys deactivated and inline deny
policies put on users and roles (iam.py); EC2 instances taken out of their Auto Scaling and target
groups (autoscaling.py, elbv2.py), moved into an isolation security group, protected from
termination and tagged, never stopped, and EBS snapshots created (ec2.py); deny entries added to a
WAFv2 IP set or a network ACL (network.py), rate-based rules added to a web ACL (waf.py); S3 public
access blocks set, deny statements added to bucket policies and object versions copied over the
latest (s3.py); persistence an attacker left removed (persistence.py); Secrets Manager secrets
rotated (secretsmanager.py). Reads only: CloudTrail event lookups (cloudtrail.py), IAM persistence
listings (persistence.py). Every change goes through `run_change`
(irp/actions/base.py): the target's state before and after archived under actions/<stage>/<step>/,
an `Outcome` whose `undo` names the action that reverses it. Clients: clients.py. Secret values are
never logged, returned or archived.
"""
