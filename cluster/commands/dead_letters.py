"""``eventray dead-letters decrypt``: the dead letters of ``dead_letter.payload: encrypted`` made readable again.

Reads dead-letter JSONL (the file dead-letter output: ``payload_base64``/``key_base64`` and the origin) from files,
directories of ``*.jsonl`` or standard input (``-``), and writes the same records with their sealed values opened,
in the same shape, so what fixes and replays raw dead letters takes them too. A value that is not sealed is
refused (whoever can write the dead-letter store could otherwise slip in a plaintext of their choice) unless
``--allow-plain`` says the files also hold dead letters from before encryption. The key is read from the
environment (``--key-env``), never from a flag. The output holds personal data again: a file given with ``--out``
is made readable by its owner only.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from pipelines.at_rest import SealedValueError, ValueCipher, parse_key, sealed_key_id
from pipelines.config.dead_letter import DEAD_LETTER_KEY_ENV
from pipelines.errors import ConfigError
from pipelines.stages.dead_letter_policy import sealed_place

__all__ = ["add_dead_letters_command"]

_SEALABLE = ("payload", "key")


def add_dead_letters_command(commands: Any) -> None:
    dead_letters = commands.add_parser("dead-letters", help="work with dead-letter output (decrypt)")
    actions = dead_letters.add_subparsers(dest="action", required=True, metavar="ACTION")
    decrypt = actions.add_parser(
        "decrypt", help="open the values of encrypted dead letters (dead_letter.payload/key: encrypted)"
    )
    decrypt.add_argument("paths", nargs="+", metavar="PATH", help="dead-letter JSONL files, directories, or -")
    decrypt.add_argument(
        "--key-env", default=DEAD_LETTER_KEY_ENV, help=f"the variable holding the key (default {DEAD_LETTER_KEY_ENV})"
    )
    decrypt.add_argument("--out", type=Path, default=None, help="write here (mode 0600) instead of standard output")
    decrypt.add_argument(
        "--allow-plain", action="store_true", help="pass values that are not encrypted through (older dead letters)"
    )
    decrypt.set_defaults(func=_decrypt)


def _decrypt(args: argparse.Namespace) -> int:
    cipher = ValueCipher(parse_key(os.environ.get(args.key_env, ""), args.key_env, field="--key-env"))
    opened = plain = records = 0
    with _output(args.out) as out:
        for where, record in _records(args.paths):
            records += 1
            for field in _SEALABLE:
                encoded = record.get(f"{field}_base64")
                if encoded is None:
                    continue
                value = base64.b64decode(encoded)
                if sealed_key_id(value) is None:
                    if not args.allow_plain:
                        raise SealedValueError(
                            f"{where}: the {field} is not encrypted. Operator action: check who wrote it; if the "
                            "files also hold dead letters from before encryption was on, run with --allow-plain"
                        )
                    plain += 1
                    continue
                place = sealed_place(record["topic"], record["partition"], record["offset"], field)
                try:
                    record[f"{field}_base64"] = base64.b64encode(cipher.open(value, place)).decode()
                except SealedValueError as error:
                    raise SealedValueError(f"{where}: {error}") from None
                opened += 1
            out.write(json.dumps(record, separators=(",", ":")) + "\n")
    destination = args.out or "standard output"
    print(f"{records:,} dead letters: {opened:,} values decrypted, {plain:,} were not encrypted; to {destination}",
          file=sys.stderr)  # fmt: skip
    return 0


@contextmanager
def _output(path: Path | None) -> Iterator[IO[str]]:
    if path is None:
        yield sys.stdout
        return
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    except OSError as error:
        raise ConfigError(f"--out {path}: {error.strerror or error} (a symbolic link is not followed)") from None
    os.fchmod(descriptor, 0o600)  # a file that existed keeps its mode otherwise
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        yield file


def _records(paths: list[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for path in paths:
        if path == "-":
            yield from _lines("standard input", sys.stdin)
            continue
        files = sorted(Path(path).glob("*.jsonl")) if Path(path).is_dir() else [Path(path)]
        for file in files:
            yield from _file_lines(file)


def _file_lines(file: Path) -> Iterator[tuple[str, dict[str, Any]]]:
    try:
        lines = file.open(encoding="utf-8")
    except OSError as error:
        raise ConfigError(f"{file}: {error.strerror or error}") from None
    with lines:
        yield from _lines(str(file), lines)


def _lines(name: str, lines: IO[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError:
            raise ConfigError(f"{name}:{number}: not a JSON line (is this dead-letter JSONL?)") from None
        if not isinstance(record, dict) or not {"topic", "partition", "offset"} <= record.keys():
            raise ConfigError(f"{name}:{number}: not a dead letter (no topic, partition and offset)")
        yield f"{name}:{number}", record
