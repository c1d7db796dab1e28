"""The action library: what playbook steps call, one module per namespace (`aws.block_ip` is in aws/).

registry.py registers and finds actions (`ActionSpec.invoke` runs one); base.py holds what actions
on third parties share: `Outcome`, `UndoPlan`, retries, and `run_change` for every state change.
"""
