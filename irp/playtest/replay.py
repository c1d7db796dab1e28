"""Provider answers at the I/O edge: replayed from a case's facts, or recorded from what is configured.

AWS: botocore's `before-call` event returns the recorded answer, so no HTTP request is made (as botocore's
Stubber does); the call's parameters are taken at `before-parameter-build`. The admin API: its httpx
client's transport (irp/actions/platform.py `stand_in`). A call no fact answers gets an error answer and is
reported, never sent.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from fnmatch import fnmatchcase
from typing import Any
from urllib.parse import quote

import httpx
from botocore.awsrequest import AWSResponse
from pydantic_core import to_jsonable_python

from irp.actions.platform import stand_in
from irp.aws import client_hooks
from irp.playbook.cases import AwsFact, PlatformFact

__all__ = ["AwsRecorder", "AwsReplay", "PLATFORM_URL", "PlatformRecorder", "PlatformReplay", "subset"]

PLATFORM_URL = "https://admin.playbook-test.invalid/admin/v1"  # where a replayed admin API "is": never resolved

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
    """The call's parameters, times left out: they move with the clock, so they are neither recorded nor matched."""
    context[_PARAMS] = to_jsonable_python({k: v for k, v in params.items() if not isinstance(v, datetime)}, fallback=str)


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
            if fact.service != service or not fnmatchcase(operation, fact.operation) or not subset(fact.params, params):
                continue
            if not fact.repeat and index in self.used:
                continue
            self.used.add(index)
            if fact.error is not None:
                return _response(fact.error.status, {"Error": {"Code": fact.error.code, "Message": fact.error.message}})
            return _response(200, _as_sent(dict(fact.response), model.output_shape))
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

    def replayable(self) -> list[dict[str, Any]]:
        """The facts, each answering once (`repeat: false`) where the same call got different answers in turn."""
        answers: dict[str, set[str]] = {}
        for fact in self.facts:
            answers.setdefault(_call_key(fact), set()).add(json.dumps(fact.get("response", fact.get("error")), sort_keys=True))
        return [{**fact, "repeat": False} if len(answers[_call_key(fact)]) > 1 else fact for fact in self.facts]

    @contextmanager
    def installed(self) -> Iterator[AwsRecorder]:
        with client_hooks(("before-parameter-build", _keep_params), ("after-call", self._after)):
            yield self


def _as_sent(parsed: Any, shape: Any) -> Any:
    """IAM policy documents as the wire has them (URL-encoded JSON): botocore decodes them after the call, replayed
    answers too, and records keep them decoded (readable)."""
    if shape is None or not isinstance(parsed, dict | list):
        return parsed
    if shape.type_name == "list" and isinstance(parsed, list):
        return [_as_sent(item, shape.member) for item in parsed]
    if shape.type_name != "structure" or not isinstance(parsed, dict):
        return parsed
    for name, member in shape.members.items():
        if name not in parsed:
            continue
        if member.type_name == "string" and member.name == "policyDocumentType" and not isinstance(parsed[name], str):
            parsed[name] = quote(json.dumps(parsed[name]))
        else:
            parsed[name] = _as_sent(parsed[name], member)
    return parsed


def _call_key(fact: dict[str, Any]) -> str:
    return json.dumps([fact["service"], fact["operation"], fact["params"]], sort_keys=True)


def _response(status: int, body: dict[str, Any]) -> tuple[AWSResponse, dict[str, Any]]:
    return AWSResponse(None, status, {}, None), {**body, "ResponseMetadata": {"HTTPStatusCode": status}}


def _request_parts(request: httpx.Request) -> tuple[str, str, dict[str, Any], Any]:
    path = request.url.path
    base = httpx.URL(PLATFORM_URL).path.rstrip("/") + "/"
    relative = path[len(base):] if path.startswith(base) else path.lstrip("/")
    try:
        body = json.loads(request.content) if request.content else {}
    except ValueError:
        body = request.content.decode(errors="replace")
    return request.method, relative, dict(request.url.params), body


class PlatformReplay:
    """Answer the admin API's requests from the case's facts; `unrecorded` lists those none answered."""

    def __init__(self, facts: list[PlatformFact]) -> None:
        self.facts = list(facts)
        self.used: set[int] = set()
        self.unrecorded: list[str] = []

    def answer(self, request: httpx.Request) -> httpx.Response:
        method, path, params, body = _request_parts(request)
        for index, fact in enumerate(self.facts):
            if fact.method != method or not fnmatchcase(path, fact.path) or not subset(fact.params, params) \
                    or not subset(fact.body, body if isinstance(body, dict) else {}):
                continue
            if not fact.repeat and index in self.used:
                continue
            self.used.add(index)
            return _http(fact.status, fact.response)
        self.unrecorded.append(f"platform {method} {path} {params or ''}{body or ''}".strip())
        return _http(404, {"error": {"code": UNRECORDED, "message": f"no recorded fact answers {method} {path} "
                                     "(playbook test: add it to facts.platform)"}})

    @contextmanager
    def installed(self) -> Iterator[PlatformReplay]:
        with stand_in(httpx.MockTransport(self.answer), token="playbook-test"):
            yield self


class PlatformRecorder:
    """Keep every admin API exchange of a run against the configured API, as facts to replay."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.facts: list[dict[str, Any]] = []

    def forward(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        response.read()
        response.close()
        method, path, params, _body = _request_parts(request)
        fact: dict[str, Any] = {"method": method, "path": path, "status": response.status_code}
        if params:
            fact["params"] = params
        try:
            fact["response"] = response.json() if response.content else None
        except ValueError:
            fact["response"] = response.text
        self.facts.append(fact)
        return httpx.Response(response.status_code, headers=response.headers, stream=_Body(response.content))

    @contextmanager
    def installed(self) -> Iterator[PlatformRecorder]:
        with stand_in(httpx.MockTransport(self.forward)):
            yield self


class _Body(httpx.SyncByteStream):
    """A body the client reads as from the network (so it times the exchange, as it does a real one)."""

    def __init__(self, data: bytes) -> None:
        self.data = data

    def __iter__(self) -> Iterator[bytes]:
        yield self.data


def _http(status: int, body: Any) -> httpx.Response:
    if body is None:
        return httpx.Response(status, stream=_Body(b""))
    return httpx.Response(status, headers={"content-type": "application/json"}, stream=_Body(json.dumps(body).encode()))
