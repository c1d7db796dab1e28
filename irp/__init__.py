"""irp: the Confluent Digital incident-response policy, made executable with Prefect."""
