"""Injected crashes (``faults:`` in a pipeline config), for the chaos suite: an exit at an exact point of the
checkpoint protocol that a SIGKILL from outside could only hit by luck."""

from __future__ import annotations

import logging
import os

from pipelines.config import PipelineConfig

__all__ = ["crash_if_planned", "faults_after"]

log = logging.getLogger(__name__)
_EXIT_CODE = 70


def crash_if_planned(config: PipelineConfig, point: str, slot: str, epoch: int, prepared_outputs: bool) -> None:
    """Exit the process at once (no cleanup, as a kill) if ``config.faults`` plans a crash here: at ``point``
    of the first epoch from the fault's ``epoch`` on in which ``slot`` prepared outputs to commit (an epoch
    with nothing to commit would test nothing). The Supervisor drops a fault once a checkpoint of its epoch
    or later is restored, so it fires once per run (:func:`faults_after`)."""
    for fault in config.faults:
        if (fault.point, fault.slot) == (point, slot) and epoch >= fault.epoch and prepared_outputs:
            log.error("injected fault: %s exits at %s of epoch %d", slot, point, epoch)
            os._exit(_EXIT_CODE)


def faults_after(config: PipelineConfig, restored_epoch: int | None) -> PipelineConfig:
    """``config`` for a topology restored from the checkpoint of ``restored_epoch`` (None: a fresh start): only
    the faults planned for later epochs, since those of earlier ones fired (or their epochs passed)."""
    if restored_epoch is None or not config.faults:
        return config
    return config.model_copy(update={"faults": [f for f in config.faults if f.epoch > restored_epoch]})
