"""Stage tasks (one module per policy stage) and the actions playbook steps call."""
