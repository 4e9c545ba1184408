"""The base of every config model: unknown keys rejected, values frozen."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["ConfigModel"]


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
