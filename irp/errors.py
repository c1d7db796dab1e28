"""The exception tree. Every error a user can cause derives from IrpError.

    IrpError
    ├── ConfigurationError      settings missing or invalid
    ├── PlaybookError           a playbook or routing file does not validate (holds every problem)
    ├── AlertError              an alert file or payload cannot be read or is invalid
    ├── ActionError             an action failed while running a step
    │   ├── NotConfiguredError  the integration an action needs is not configured
    │   ├── InvalidArgumentsError  an action's arguments do not validate against its model
    │   ├── TransientError      a third party failed in a way that may pass (throttling, 5xx, timeout)
    │   └── PermanentError      a third party refused (access denied, invalid request, no such target)
    │       └── ProtectedTargetError  a step would change a target IRP_ACTION_TARGETS protects
    └── EvidenceError           the evidence store refused or lost an operation
"""

from __future__ import annotations

from pydantic import ValidationError


class IrpError(Exception):
    """Raised for every failure the user can act on; its message says what, where and what is valid."""


class ConfigurationError(IrpError):
    """Raised when a setting is missing or invalid."""


class PlaybookError(IrpError):
    """Raised when a playbook does not validate; `problems` lists every one."""

    def __init__(self, problems: list) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class AlertError(IrpError):
    """Raised when an alert cannot be read or does not match the accepted format."""


class ActionError(IrpError):
    """Raised when an action fails; the step's on_failure decides what happens next."""


class NotConfiguredError(ActionError):
    """Raised when the integration an action needs is not configured."""


class InvalidArgumentsError(ActionError):
    """Raised when an action's arguments do not validate against its model (every problem listed)."""


class TransientError(ActionError):
    """Raised when a third party failed in a way that may pass: throttling, a 5xx, a timeout.

    The action already retried with backoff; retrying the step later may still succeed.
    """

    def __init__(self, message: str, *, provider: str = "", code: str = "") -> None:
        self.provider = provider
        self.code = code
        super().__init__(message)


class PermanentError(ActionError):
    """Raised when a third party refused a request that retrying cannot fix: access denied, invalid, missing."""

    def __init__(self, message: str, *, provider: str = "", code: str = "") -> None:
        self.provider = provider
        self.code = code
        super().__init__(message)


class ProtectedTargetError(PermanentError):
    """Raised when a step would change a target IRP_ACTION_TARGETS denies: never done automatically."""

    def __init__(self, message: str) -> None:
        super().__init__(message, provider="irp", code="ProtectedTarget")


class EvidenceError(IrpError):
    """Raised when the evidence store refuses an operation or finds evidence altered."""


def field_errors(exc: ValidationError, prefix: tuple[str | int, ...] = ()) -> list[tuple[str, str]]:
    """(dotted location, message) of each error of a pydantic ValidationError, e.g. ("labels.tenant", "...")."""
    return [(".".join(map(str, (*prefix, *e["loc"]))), e["msg"]) for e in exc.errors(include_url=False)]


def field_errors_text(exc: ValidationError, whole: str = "") -> str:
    """The errors of a ValidationError on one line: `loc: message; loc: message` (`whole` names an empty loc)."""
    return "; ".join(f"{loc or whole}: {message}" for loc, message in field_errors(exc))
