"""Where checkpoints live: Arrow IPC state files and one metadata file per epoch, on any ``pyarrow.fs``.

Layout under ``<uri>/<pipeline>/``::

    epoch-000012/state-aggregate-0.arrow      keyed state of one actor (rows carry their key group)
    epoch-000012/ahead-aggregate-0-1.arrow    write-ahead copy of an exactly-once Kafka sink's epoch output
    epoch-000012/_checkpoint.json             written last, atomically: the epoch is complete once it exists
    LINEAGE                                   the identity of this location's sequence of epochs (see below)

Guarantees: a checkpoint is *complete* only when its metadata exists, and the metadata names every file with
its size and SHA-256 (an encrypted file: its GCM tag, :mod:`pipelines.at_rest`), so a torn or truncated file (a
crash mid-write, a disk error) makes :meth:`latest` skip that epoch and fall back to the one before under
at-least-once, and refuse under exactly-once (that epoch's outputs may have been committed). A read error is
tried again a few times before it counts. On a local disk files and directories are fsynced before the metadata
that names them is moved into place. Files are never modified after being written (snapshots are immutable);
:meth:`prune` keeps the newest ``keep`` complete epochs.

Epoch numbers count up from the highest one a location holds, so they start again at 1 in a new location (or
one whose directory was deleted to rebuild state). Anything kept outside the location that names an epoch
(exactly-once commit markers in Kafka) names it with the location's *lineage* too, a random identity created
when the location is first used (:meth:`CheckpointStore.ensure_lineage`): epoch 3 of one lineage says nothing
of epoch 3 of another.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import time
import uuid
from collections.abc import Callable, Iterator

import msgspec
import pyarrow as pa
import pyarrow.fs as pafs

from pipelines.at_rest import (
    CheckpointKeyError,
    FileAuthenticationError,
    FileCipher,
    file_key_id,
    gcm_tag,
    no_key,
    wrong_key,
)
from pipelines.config.pipeline import CheckpointConfig
from pipelines.errors import FatalError

__all__ = [
    "PRE_LINEAGE",
    "AggregateSnapshot",
    "Checkpoint",
    "CheckpointStore",
    "CheckpointWriteError",
    "MissingLineageError",
    "PendingFile",
    "RunCounts",
    "SourceSnapshot",
    "StateFile",
    "TornSnapshotError",
    "WriteAhead",
    "fsync_path",
    "open_checkpoint_store",
]

log = logging.getLogger(__name__)

_METADATA = "_checkpoint.json"
_EPOCH_PREFIX = "epoch-"
_LINEAGE = "LINEAGE"
_PRE_LINEAGE_MARK = "pre-lineage"  # in the file; PRE_LINEAGE in code
PRE_LINEAGE = ""
"""The lineage of a location that held epochs before lineages existed: its commit markers carry none."""
_READ_ATTEMPTS = 4
_FIRST_RETRY_S = 0.25


class TornSnapshotError(FatalError):
    """A file of a complete checkpoint cannot be read, or does not match the size or checksum its checkpoint
    recorded."""


class MissingLineageError(FatalError):
    """An actor found no lineage where the Supervisor creates one before it starts any actor (the checkpoint
    location was deleted or replaced while the pipeline ran). Operator action: run the pipeline again."""


def fsync_path(path: str | os.PathLike[str]) -> None:
    """fsync a local file or directory (a directory: the names created or renamed in it)."""
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


class CheckpointWriteError(FatalError):
    """A checkpoint file could not be written (disk full, no permission, storage down): the checkpoint is not
    complete, and the run stops with the path named. Nothing is lost: a run started again resumes from the last
    complete checkpoint."""


@contextlib.contextmanager
def _writing(path: str) -> Iterator[None]:
    try:
        yield
    except OSError as error:
        raise CheckpointWriteError(
            f"cannot write checkpoint file {path}: {error}. Operator action: free space on (or restore write "
            "access to) the checkpoint location, then run again: the pipeline resumes from its last complete "
            "checkpoint"
        ) from error


class StateFile(msgspec.Struct, frozen=True):
    path: str  # relative to the pipeline's checkpoint directory
    rows: int
    size_bytes: int
    sha256: str  # of the stored bytes of a plain file; "" for an encrypted one (written since tags are recorded)
    key_id: str = ""  # of the key it is encrypted with; "" for a plain file (and every file before encryption)
    tag: str = ""  # an encrypted file's GCM tag (hex), which authenticates all its bytes


class SourceSnapshot(msgspec.Struct, frozen=True):
    """One source actor at a barrier: the next offset to read and the newest event time, per partition."""

    actor_id: str
    positions: dict[int, int]
    max_event_time_ms: dict[int, int]
    limit_ends: dict[int, int] = {}  # where bounded partitions stop (max_events, or a freeze)


class PendingFile(msgspec.Struct, frozen=True):
    """An exactly-once file output of the epoch, staged at ``staged`` and renamed to ``final`` on commit."""

    staged: str
    final: str


class WriteAhead(msgspec.Struct, frozen=True):
    """The rows an exactly-once Kafka sink slot wrote in the epoch, to re-emit if its commit did not happen."""

    slot: str
    rows: StateFile


class RunCounts(msgspec.Struct, frozen=True):
    """The run's counters up to a checkpoint (cumulative over the topologies that ran since the run began)."""

    events_in: int = 0
    events_out: int = 0
    dead_lettered: int = 0
    late_events: int = 0
    windows_emitted: int = 0
    dropped_intended: int = 0

    def plus(self, other: RunCounts) -> RunCounts:
        return RunCounts(*(a + b for a, b in zip(msgspec.structs.astuple(self), msgspec.structs.astuple(other),
                                                 strict=True)))  # fmt: skip

    def minus(self, other: RunCounts) -> RunCounts:
        return RunCounts(*(a - b for a, b in zip(msgspec.structs.astuple(self), msgspec.structs.astuple(other),
                                                 strict=True)))  # fmt: skip


class AggregateSnapshot(msgspec.Struct, frozen=True):
    """One keyed-stage actor's part of a checkpoint; ``stage`` is its keyed stage's place in ``stages`` (0 for
    the first, or the one)."""

    actor_id: str
    key_groups: list[int]
    watermark_ms: int
    state: StateFile | None
    pending_files: list[PendingFile] = []
    write_ahead: list[WriteAhead] = []
    stage: int = 0
    positions: StateFile | None = None  # a queryable stage's read-your-writes positions (pipelines/state/queryable.py)
    epoch: int = 0  # the checkpoint it belongs to (0: written before this was recorded)


class Checkpoint(msgspec.Struct, frozen=True):
    """A complete epoch: everything needed to restore the whole topology."""

    epoch: int
    run_id: str
    created_at_s: float
    started_at_s: float  # the run's clock (generator end offsets grow with it)
    start_time_ms: int
    partitions: int
    sources: list[SourceSnapshot]
    aggregates: list[AggregateSnapshot]
    source_pending_files: list[PendingFile] = []
    source_write_ahead: list[WriteAhead] = []
    finished: bool = False
    duration_ms: float = 0.0
    counts: RunCounts = RunCounts()
    inputs: list[str] = []  # the input layout its partitions are numbered by (pipelines.stages.topology.input_layout)

    @property
    def positions(self) -> dict[int, int]:
        return {p: offset for source in self.sources for p, offset in source.positions.items()}

    @property
    def max_event_time_ms(self) -> dict[int, int]:
        return {p: t for source in self.sources for p, t in source.max_event_time_ms.items()}

    @property
    def pending_files(self) -> list[PendingFile]:
        return [*self.source_pending_files, *(f for a in self.aggregates for f in a.pending_files)]

    @property
    def write_ahead(self) -> list[WriteAhead]:
        return [*self.source_write_ahead, *(w for a in self.aggregates for w in a.write_ahead)]

    @property
    def state_files(self) -> list[StateFile]:
        """Every file the checkpoint names: keyed state and write-ahead outputs."""
        return [*(a.state for a in self.aggregates if a.state is not None), *(w.rows for w in self.write_ahead)]


class CheckpointStore:
    """Checkpoints of one pipeline under ``<uri>/<pipeline>`` (a local directory or a pyarrow.fs URI)."""

    def __init__(
        self, uri: str, pipeline: str, sleep: Callable[[float], None] = time.sleep, key: bytes | None = None
    ) -> None:
        """``sleep`` waits between attempts of a read that failed (storage trouble may be transient); with
        ``key`` (32 bytes) every state file is encrypted at rest (:mod:`pipelines.at_rest`)."""
        self._cipher = FileCipher(key) if key is not None else None
        self._pipeline = pipeline
        if "://" in uri:
            self._fs, root = pafs.FileSystem.from_uri(uri)
        else:
            self._fs, root = pafs.LocalFileSystem(), uri
        self.root = f"{root.rstrip('/')}/{pipeline}"
        self._sleep = sleep
        self._fs.create_dir(self.root, recursive=True)

    def ensure_lineage(self) -> str:
        """This location's lineage, created (random, written atomically) if it has none yet. Called by the
        Supervisor alone, before any actor starts, so one location never gets two.

        A location that already holds epochs but no lineage was written before lineages existed: its markers
        carry none, so it keeps the empty lineage (:data:`PRE_LINEAGE`), under which those markers still count
        (an interrupted epoch already committed is not redone twice after the upgrade)."""
        existing = self._read_lineage()
        if existing is not None:
            return existing
        fresh = uuid.uuid4().hex if self.latest_epoch() == 0 else _PRE_LINEAGE_MARK
        self._write_atomically(f"{self.root}/{_LINEAGE}", fresh.encode())
        created = self._read_lineage()
        assert created is not None
        return created

    def lineage(self) -> str:
        """This location's lineage (:meth:`ensure_lineage` created it); :class:`MissingLineageError` if none."""
        existing = self._read_lineage()
        if existing is None:
            raise MissingLineageError(
                f"checkpoint location {self.root} has no {_LINEAGE} file: it was deleted or replaced while the "
                "pipeline ran. Operator action: run the pipeline again"
            )
        return existing

    def _read_lineage(self) -> str | None:
        try:
            recorded = self._read(f"{self.root}/{_LINEAGE}").decode().strip()
        except FileNotFoundError:
            return None
        return PRE_LINEAGE if recorded == _PRE_LINEAGE_MARK else recorded or None

    @staticmethod
    def epoch_dir(epoch: int) -> str:
        return f"{_EPOCH_PREFIX}{epoch:06d}"

    def write_table(self, epoch: int, name: str, table: pa.Table) -> StateFile:
        """Write ``table`` as Arrow IPC into the epoch's directory; return its description for the metadata."""
        relative = f"{self.epoch_dir(epoch)}/{name}.arrow"
        self._create_epoch_dir(epoch)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_file(sink, table.schema) as writer:
            writer.write_table(table)
        plain = sink.getvalue()
        cipher = self._cipher
        data = cipher.seal(memoryview(plain), self._place(relative)) if cipher is not None else plain
        path = f"{self.root}/{relative}"
        with _writing(path):
            with self._fs.open_output_stream(path) as out:
                out.write(data)
            self._owner_only(path)
            self._sync(path)
        if cipher is not None:
            return StateFile(relative, table.num_rows, len(data), "", cipher.key_id, gcm_tag(data))
        return StateFile(relative, table.num_rows, len(data), hashlib.sha256(data).hexdigest())

    def read_table(self, state: StateFile) -> pa.Table:
        """The table of ``state``; :class:`TornSnapshotError` if the file is not exactly what was written."""
        path = f"{self.root}/{state.path}"
        try:
            data = self._read(path)
        except OSError as error:
            raise TornSnapshotError(f"checkpoint file {path} cannot be read: {error}") from None
        self._check_intact(path, state, data)
        if not state.key_id:
            return pa.ipc.open_file(pa.py_buffer(data)).read_all()
        if self._cipher is None:
            raise no_key(state.path, state.key_id, "EVENTRAY_CHECKPOINT_KEY")
        if self._cipher.key_id != state.key_id:
            raise wrong_key(state.path, state.key_id, self._cipher.key_id)
        if file_key_id(data) != state.key_id:
            raise TornSnapshotError(f"checkpoint file {path} does not start as one encrypted with key id "
                                    f"{state.key_id}: it was altered or replaced")  # fmt: skip
        try:
            plain = self._cipher.open(data, self._place(state.path))
        except FileAuthenticationError as error:
            raise TornSnapshotError(f"checkpoint file {path} is torn or altered: {error}") from None
        return pa.ipc.open_file(pa.py_buffer(plain)).read_all()

    @staticmethod
    def _check_intact(path: str, state: StateFile, data: bytes) -> None:
        """:class:`TornSnapshotError` unless ``data`` has the size and the SHA-256 (plain) or the GCM tag
        (encrypted) the metadata recorded."""
        if len(data) != state.size_bytes:
            raise TornSnapshotError(f"checkpoint file {path} is torn ({len(data)} of {state.size_bytes} bytes)")
        if state.tag:
            intact = gcm_tag(data) == state.tag
        else:  # plain, or encrypted before tags were recorded
            intact = bool(state.sha256) and hashlib.sha256(data).hexdigest() == state.sha256
        if not intact:
            raise TornSnapshotError(f"checkpoint file {path} is torn or altered: it is not the file written")

    def _place(self, relative: str) -> str:
        """What an encrypted file is bound to: its pipeline and its path in the location (not the location
        itself, so a copied location still decrypts)."""
        return f"{self._pipeline}/{relative}"

    def commit(self, checkpoint: Checkpoint) -> None:
        """Make ``checkpoint`` complete: write its metadata to a temporary name, then move it into place (on a
        local disk each file and directory is fsynced first, so a complete checkpoint survives a power loss)."""
        self._create_epoch_dir(checkpoint.epoch)
        relative = f"{self.epoch_dir(checkpoint.epoch)}/{_METADATA}"
        data = msgspec.json.encode(checkpoint)
        if self._cipher is not None:  # sealed too: the offsets, and the tags that pin the state files, authenticated
            data = bytes(self._cipher.seal(data, self._place(relative)))
        self._write_atomically(f"{self.root}/{relative}", data)

    def latest(self, allow_fallback: bool = True) -> Checkpoint | None:
        """The newest complete checkpoint whose files are all intact.

        A complete checkpoint with a torn file (corrupted after it was written: files are written before the
        metadata, so a crash mid-write leaves only an incomplete epoch, which is ignored) is skipped with a
        warning when ``allow_fallback``; otherwise :class:`TornSnapshotError` is raised, because that epoch's
        outputs were committed and restoring an older one would emit them again (exactly-once would break).
        """
        for epoch in sorted(self._epochs(), reverse=True):
            checkpoint = self._load(epoch, allow_fallback)
            if checkpoint is None:
                continue
            torn = self._torn(checkpoint)
            if torn is None:
                return checkpoint
            if not allow_fallback:
                raise TornSnapshotError(
                    f"checkpoint {epoch} of {self.root} is torn ({torn}); its outputs were committed, so an older "
                    "checkpoint cannot be restored exactly once. Operator action: restore the file from a backup, "
                    "or run once with delivery: at_least_once (duplicates, no loss)"
                )
            log.warning("checkpoint %d is torn (%s); falling back to an older one", epoch, torn)
        return None

    def latest_epoch(self) -> int:
        """The highest epoch number ever started here (complete or not), or 0."""
        return max(self._epochs(), default=0)

    def latest_complete_epoch(self) -> int:
        """The newest epoch whose metadata was written (complete), or 0: from listings alone, no file read or
        decoded (the driver's measure of a run's progress between Supervisor deaths)."""
        for epoch in sorted(self._epochs(), reverse=True):
            if self._fs.get_file_info(f"{self.root}/{self.epoch_dir(epoch)}/{_METADATA}").type == pafs.FileType.File:
                return epoch
        return 0

    def prune(self, keep: int) -> None:
        """Delete all but the newest ``keep`` complete epochs, and unfinished epochs older than those."""
        complete = [epoch for epoch in sorted(self._epochs(), reverse=True) if self._load(epoch) is not None]
        if len(complete) < keep:
            return
        oldest_kept = complete[keep - 1]
        for epoch in self._epochs():
            if epoch < oldest_kept:
                self._fs.delete_dir(f"{self.root}/{self.epoch_dir(epoch)}")

    def clear(self) -> None:
        """Forget every checkpoint (a run that starts from scratch)."""
        self._fs.delete_dir_contents(self.root, missing_dir_ok=True)

    def _epochs(self) -> list[int]:
        infos = self._fs.get_file_info(pafs.FileSelector(self.root, allow_not_found=True))
        epochs = []
        for info in infos:
            if info.type == pafs.FileType.Directory and info.base_name.startswith(_EPOCH_PREFIX):
                suffix = info.base_name.removeprefix(_EPOCH_PREFIX)
                if suffix.isdigit():
                    epochs.append(int(suffix))
        return epochs

    def _load(self, epoch: int, allow_fallback: bool = True) -> Checkpoint | None:
        """The epoch's metadata; None when it has none (incomplete). Metadata that exists but cannot be read or
        decoded is skipped with a warning when ``allow_fallback``, else :class:`TornSnapshotError`: under
        exactly-once that epoch's outputs may have been committed, and an older epoch would repeat them."""
        relative = f"{self.epoch_dir(epoch)}/{_METADATA}"
        path = f"{self.root}/{relative}"
        try:
            return self._decode_metadata(relative, self._read(path))
        except FileNotFoundError:
            return None
        except (OSError, msgspec.DecodeError, msgspec.ValidationError, FileAuthenticationError) as error:
            if allow_fallback:
                log.warning("checkpoint %d cannot be read (%s); falling back to an older one", epoch, error)
                return None
            raise TornSnapshotError(
                f"checkpoint {epoch} of {self.root} exists but cannot be read ({path}: {error}); its outputs may "
                "have been committed, so an older checkpoint cannot be restored exactly once. Operator action: "
                "fix the storage and run again, or run once with delivery: at_least_once (duplicates, no loss)"
            ) from None

    def _decode_metadata(self, relative: str, data: bytes) -> Checkpoint:
        """An epoch's metadata: sealed when encryption is on (:class:`FileAuthenticationError` if altered). Plain
        metadata is read as written before encryption was turned on, but not when it names encrypted files: that
        one was replaced, to pass off other offsets or files as the checkpoint's."""
        written_with = file_key_id(data)
        if written_with is not None:
            if self._cipher is None:
                raise no_key(relative, written_with, "EVENTRAY_CHECKPOINT_KEY")
            data = bytes(self._cipher.open(data, self._place(relative)))
        checkpoint = msgspec.json.decode(data, type=Checkpoint)
        if written_with is None and any(state.key_id for state in checkpoint.state_files):
            raise FileAuthenticationError(f"{relative} is plain and names encrypted files: it was replaced")
        return checkpoint

    def _read(self, path: str) -> bytes:
        """The bytes of ``path``. A missing file raises FileNotFoundError at once; other read errors are tried
        again (``_READ_ATTEMPTS`` in all, waits doubling from ``_FIRST_RETRY_S``) before they are raised."""
        for attempt in range(_READ_ATTEMPTS):
            try:
                with self._fs.open_input_file(path) as source:
                    return bytes(source.read())
            except FileNotFoundError:  # noqa: PERF203 - a retry loop: the handlers are its point
                raise
            except OSError as error:
                if attempt == _READ_ATTEMPTS - 1:
                    raise
                log.warning("reading %s failed (%s); trying again", path, error)
                self._sleep(_FIRST_RETRY_S * 2**attempt)
        raise AssertionError("unreachable")  # pragma: no cover

    def _create_epoch_dir(self, epoch: int) -> None:
        directory = f"{self.root}/{self.epoch_dir(epoch)}"
        if self._fs.get_file_info(directory).type != pafs.FileType.Directory:
            with _writing(directory):
                self._fs.create_dir(directory, recursive=True)
                self._sync(self.root)  # the new directory's entry

    def _write_atomically(self, path: str, data: bytes) -> None:
        """Write ``data`` to a temporary name, then move it to ``path``: readers see all of it or nothing."""
        temporary = f"{path}.{uuid.uuid4().hex}.tmp"
        with _writing(path):
            with self._fs.open_output_stream(temporary) as out:
                out.write(data)
            self._owner_only(temporary)
            self._sync(temporary)
            self._fs.move(temporary, path)
            self._sync(path.rsplit("/", 1)[0])  # the rename

    def _owner_only(self, path: str) -> None:
        """Checkpoint files are readable by their owner only (mode 0600) on a local disk."""
        if isinstance(self._fs, pafs.LocalFileSystem):
            os.chmod(path, 0o600)

    def _sync(self, path: str) -> None:
        """fsync ``path`` (a file or a directory) on a local disk; object stores are durable once written."""
        if isinstance(self._fs, pafs.LocalFileSystem):
            fsync_path(path)

    def _torn(self, checkpoint: Checkpoint) -> str | None:
        """What is wrong with the checkpoint's files, or None when every one is intact."""
        try:
            for state in checkpoint.state_files:
                self.read_table(state)
        except TornSnapshotError as error:
            return str(error)
        return None


def open_checkpoint_store(checkpoint: CheckpointConfig | None, pipeline: str) -> CheckpointStore | None:
    """The store of a pipeline's checkpoints (None without checkpoints), encrypting when the config says so (its
    key resolved by the driver: :func:`pipelines.config.secrets.resolve_secrets`)."""
    if checkpoint is None:
        return None
    encryption = checkpoint.encryption
    if encryption is None:
        return CheckpointStore(checkpoint.uri, pipeline)
    if encryption.key is None:
        raise CheckpointKeyError(
            f"checkpoint.encryption: the key ({encryption.key_env}) was not resolved. Operator action: run through "
            "eventray, which reads it from the environment once, or resolve_secrets(config) first"
        )
    return CheckpointStore(checkpoint.uri, pipeline, key=bytes.fromhex(encryption.key.get_secret_value()))
