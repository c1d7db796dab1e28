"""Schemathesis fuzzes every operation of the served OpenAPI document: nothing a client sends gives a 5xx.

Each generated request is sent twice to the running `irp webhook`: with the bearer token (it reaches
parsing, validation, routing and the journal) and without (the authentication paths).
"""

from __future__ import annotations

import itertools

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from intake_harness import PD_SECRET, SECRET_NEW, TOKEN, make_intake
from schemathesis import GenerationMode

from irp.intake.sources import SOURCES

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def fuzz_intake(deployments: str, tmp_path_factory: pytest.TempPathFactory):
    tmp = tmp_path_factory.mktemp("intake-fuzz")
    service = make_intake(tmp, deployments, IRP_WEBHOOK_SECRET=SECRET_NEW, IRP_PAGERDUTY_SECRET=PD_SECRET,
                          IRP_SNS_TOPIC_ARNS="arn:aws:sns:eu-west-3:123456789012:incident-response",
                          IRP_EVIDENCE_URL=f"file://{tmp / 'evidence'}").start()
    yield service
    service.stop()
    log = service.log.read_text()
    assert "Traceback" not in log, log[-5000:]


def test_no_server_error(fuzz_intake) -> None:
    """Every operation, valid and invalid cases (positive and negative modes), at most 60 examples each.

    The Python API rather than schemathesis' pytest plugin: its lazy fixture loader fails on pytest 9.
    """
    schema = schemathesis.openapi.from_url(f"{fuzz_intake.url}/openapi.json")
    operations = [result.ok() for result in schema.get_all_operations()]
    # every source's POST, health, metrics, unrouted, replay, delivery, and an approval link's GET and POST
    assert len(operations) == len(SOURCES) + 7
    seen: dict[str, set[int]] = {}
    for operation, mode in itertools.product(operations, (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)):

        @settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=operation.as_strategy(generation_mode=mode))
        def check(case) -> None:
            for headers in ({"Authorization": f"Bearer {TOKEN}"}, {}):
                response = case.call(base_url=fuzz_intake.url, headers=headers, timeout=30)
                seen.setdefault(f"{case.method} {case.path}", set()).add(response.status_code)
                assert response.status_code < 500, (
                    f"{case.method} {case.path} -> {response.status_code}: {response.text[:500]}\n"
                    f"body: {str(case.body)[:500]}")

        try:
            check()
        except Unsatisfiable:  # nothing to make invalid (e.g. GET /healthz has no input)
            assert mode is GenerationMode.NEGATIVE
    print({key: sorted(codes) for key, codes in seen.items()})
    assert any(202 in codes for codes in seen.values()), "no generated request was ever accepted"
    assert all({401, 422} <= codes for key, codes in seen.items() if key.startswith("POST /alerts/g")), seen
