"""Provider answers at the I/O edge: replayed from a case's facts, or recorded from what is configured.

AWS: botocore's `before-call` event returns the recorded answer, so no HTTP request is made (as botocore's
Stubber does); the call's parameters are taken at `before-parameter-build`. A call no fact answers gets an
error answer and is reported, never sent.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from botocore.awsrequest import AWSResponse
from pydantic_core import to_jsonable_python

from irp.aws import client_hooks
from irp.playbook.cases import AwsFact

__all__ = ["AwsRecorder", "AwsReplay", "subset"]

_PARAMS = "irp_playtest_params"
UNRECORDED = "IrpNoRecordedFact"


def subset(expected: Any, actual: Any) -> bool:
    """`expected` is found in `actual`: mappings by key (recursively), lists item by item, values equal
    (a number and its text form compare equal, as templates give text)."""
    if isinstance(expected, dict):
        return isinstance(actual, dict) and all(k in actual and subset(v, actual[k]) for k, v in expected.items())
    if isinstance(expected, list):
        return isinstance(actual, list) and len(expected) == len(actual) and all(map(subset, expected, actual))
    if expected == actual:
        return True
    return not isinstance(expected, bool) and not isinstance(actual, bool) and str(expected) == str(actual)


def _keep_params(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    context[_PARAMS] = to_jsonable_python(dict(params), fallback=str)


def _name(model: Any) -> tuple[str, str]:
    return model.service_model.service_name, model.name


class AwsReplay:
    """Answer every AWS call from the case's facts; `unrecorded` lists the calls none answered."""

    def __init__(self, facts: list[AwsFact]) -> None:
        self.facts = list(facts)
        self.used: set[int] = set()
        self.calls: list[str] = []
        self.unrecorded: list[str] = []

    def _answer(self, model: Any, context: dict[str, Any], **_: Any) -> tuple[AWSResponse, dict[str, Any]]:
        service, operation = _name(model)
        params = context.get(_PARAMS, {})
        self.calls.append(f"{service}.{operation}")
        for index, fact in enumerate(self.facts):
            if (fact.service, fact.operation) != (service, operation) or not subset(fact.params, params):
                continue
            if not fact.repeat and index in self.used:
                continue
            self.used.add(index)
            if fact.error is not None:
                return _response(fact.error.status, {"Error": {"Code": fact.error.code, "Message": fact.error.message}})
            return _response(200, dict(fact.response))
        self.unrecorded.append(f"{service}.{operation} {params}")
        return _response(400, {"Error": {"Code": UNRECORDED, "Message": f"no recorded fact answers {service}."
                                         f"{operation} with these parameters (playbook test: add it to facts.aws)"}})

    @contextmanager
    def installed(self) -> Iterator[AwsReplay]:
        with client_hooks(("before-parameter-build", _keep_params), ("before-call", self._answer)):
            yield self


class AwsRecorder:
    """Keep every AWS answer of a run against what is configured (moto, an account), as facts to replay."""

    def __init__(self) -> None:
        self.facts: list[dict[str, Any]] = []

    def _after(self, model: Any, parsed: dict[str, Any], context: dict[str, Any], http_response: Any = None,
               **_: Any) -> None:
        service, operation = _name(model)
        fact: dict[str, Any] = {"service": service, "operation": operation, "params": context.get(_PARAMS, {})}
        answer = {k: v for k, v in parsed.items() if k != "ResponseMetadata"}
        if "Error" in answer:
            error = answer["Error"]
            fact["error"] = {"code": error.get("Code", ""), "message": error.get("Message", ""),
                             "status": getattr(http_response, "status_code", 400)}
        else:
            fact["response"] = to_jsonable_python(answer, fallback=str)
        self.facts.append(fact)

    @contextmanager
    def installed(self) -> Iterator[AwsRecorder]:
        with client_hooks(("before-parameter-build", _keep_params), ("after-call", self._after)):
            yield self


def _response(status: int, body: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    return AWSResponse(None, status, {}, None), {**body, "ResponseMetadata": {"HTTPStatusCode": status}}
