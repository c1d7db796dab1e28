"""Links into the Prefect UI: where it is (environment, else the Prefect profile) and a flow run's page."""

from __future__ import annotations

import os

__all__ = ["flow_run_url", "ui_base"]


def ui_base() -> str | None:
    """The Prefect UI: PREFECT_UI_URL, else PREFECT_API_URL without its /api, else the Prefect profile's."""
    ui, api = os.environ.get("PREFECT_UI_URL"), os.environ.get("PREFECT_API_URL")
    if not ui and not api:
        try:
            from prefect.settings import get_current_settings

            settings = get_current_settings()
            ui, api = settings.ui_url, settings.api.url
        except Exception:  # a broken Prefect profile must not stop reading the history
            return None
    if ui:
        return str(ui).rstrip("/")
    if api:
        api = str(api).rstrip("/")
        return api.removesuffix("/api")
    return None


def flow_run_url(flow_run_id: str, base: str | None = None) -> str | None:
    """The page of a flow run in the UI at `base` (default: ui_base()); None when no UI is known."""
    base = base if base is not None else ui_base()
    return f"{base.rstrip('/')}/runs/flow-run/{flow_run_id}" if base else None
