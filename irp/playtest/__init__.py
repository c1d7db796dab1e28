"""Playbook tests and tabletop exercises: the real engine, run offline on recorded provider answers."""
