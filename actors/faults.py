"""Injected crashes (``faults:`` in a pipeline config), for the chaos suite: an exit at an exact point of the
checkpoint protocol that a SIGKILL from outside could only hit by luck."""

from __future__ import annotations

import logging
import os

from pipelines.config import PipelineConfig

__all__ = ["crash_if_planned"]

log = logging.getLogger(__name__)
_EXIT_CODE = 70


def crash_if_planned(config: PipelineConfig, point: str, slot: str, epoch: int) -> None:
    """Exit the process at once (no cleanup, as a kill) if ``config.faults`` plans a crash here."""
    for fault in config.faults:
        if (fault.point, fault.slot, fault.epoch) == (point, slot, epoch):
            log.error("injected fault: %s exits at %s of epoch %d", slot, point, epoch)
            os._exit(_EXIT_CODE)
