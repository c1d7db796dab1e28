"""Running a playbook: the respond body, stages, steps, their when/targets/approval/on_failure rules.

respond.py (one incident, the stages in the policy's order) → stages.py (a stage's steps and their
rules) → steps.py (one step: render, validate, call the action); records.py holds what they pass
along; approval.py, targets.py and target_rules.py are the gates a step may meet.
"""
