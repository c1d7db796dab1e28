"""Configuration from IRP_* environment variables (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

REPO_ROOT = Path(__file__).resolve().parent.parent


class Settings(BaseSettings):
    """Every setting, with its IRP_ variable name and default."""

    model_config = SettingsConfigDict(env_prefix="IRP_", extra="ignore")

    evidence_url: str = Field(
        f"file://{REPO_ROOT / 'var' / 'evidence'}",
        description="Where evidence is archived: file:///path (default: var/evidence in the repo).",
    )
    playbooks_dir: Path = Field(REPO_ROOT / "playbooks", description="Folder holding the playbooks.")


@lru_cache
def get_settings() -> Settings:
    """The settings, read once per process (tests clear the cache)."""
    return Settings()
