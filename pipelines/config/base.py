"""The base of every config model (unknown keys rejected, values frozen), and of every secret key in a config."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

__all__ = ["VARIABLE_NAME", "ConfigModel", "KeyFromEnvironment"]

VARIABLE_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"  # an environment variable's name


class ConfigModel(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class KeyFromEnvironment(ConfigModel):
    """A secret key read from the environment variable its ``key_env`` names, once, by the driver
    (:func:`pipelines.config.secrets.resolve_secrets`), never from a config file; never dumped or printed."""

    key: SecretStr | None = Field(default=None, exclude=True, repr=False)

    @field_validator("key", mode="before")
    @classmethod
    def _never_from_a_file(cls, value: Any) -> Any:
        if value is not None:
            raise ValueError("a key never goes in a config: export it and name its variable in key_env")
        return value
