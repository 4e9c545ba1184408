"""What a dead letter keeps of an invalid event, shared by the file and the Kafka dead-letter outputs.

See :mod:`pipelines.stages.dead_letter_policy` for what each choice does; ``encrypted`` seals the bytes under the key in
``dead_letter.encryption.key_env`` (:class:`pipelines.at_rest.ValueCipher`), and ``eventray dead-letters decrypt``
opens them again.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pipelines.config.base import VARIABLE_NAME, ConfigModel, KeyFromEnvironment

__all__ = ["DEAD_LETTER_KEY_ENV", "DeadLetterContent", "DeadLetterEncryptionConfig", "KeyPolicy", "PayloadPolicy"]

DEAD_LETTER_KEY_ENV = "EVENTRAY_DEAD_LETTER_KEY"
PayloadPolicy = Literal["raw", "masked", "encrypted", "omitted"]
KeyPolicy = Literal["raw", "encrypted", "omitted"]


class DeadLetterEncryptionConfig(KeyFromEnvironment):
    """The 256-bit key (64 hex digits) that ``payload: encrypted`` and ``key: encrypted`` seal with."""

    key_env: str = Field(default=DEAD_LETTER_KEY_ENV, pattern=VARIABLE_NAME, description="64 hex digits")


class DeadLetterContent(ConfigModel):
    payload: PayloadPolicy = Field(
        default="raw",
        description="what a dead letter keeps of the event's bytes: raw, masked (JSON fields named by mask "
        "operators masked alike; other payloads withheld), encrypted (AES-256-GCM under encryption.key_env), "
        "omitted (see pipelines/stages/dead_letter_policy.py)",
    )
    key: KeyPolicy = Field(default="raw", description="the Kafka record key: raw, encrypted or omitted")
    encryption: DeadLetterEncryptionConfig = Field(
        default_factory=DeadLetterEncryptionConfig, description="the key of payload/key: encrypted"
    )

    @property
    def encrypts(self) -> bool:
        return "encrypted" in (self.payload, self.key)
