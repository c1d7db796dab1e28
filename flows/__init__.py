"""Prefect flows: one per incident type, composing the six stage tasks of tasks/."""
