"""A dataset's inputs: files, directories (walked as ``-r`` walks them) and manifests.

Every input gets a *key*, the name its row has in the shards: a file named on its own
is its file name, a file found in a directory its path relative to that directory, and
a manifest entry its path as the manifest writes it (or the manifest's ``key`` column).
Keys are unique: two inputs with one key are a usage error, found before any work.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from tokpack.batch import AUDIO_SUFFIXES, _walk
from tokpack.errors import UsageError

#: a file with one of these suffixes lists inputs rather than being one
MANIFEST_SUFFIXES = frozenset({".txt", ".lst", ".csv", ".tsv", ".jsonl"})
#: columns (CSV/TSV) or fields (JSON lines) that name the audio file, in order of preference;
#: audio_filepath is NeMo's manifests', audio and file_name Hugging Face's audiofolder's
PATH_FIELDS = ("path", "audio_filepath", "audio", "file_name", "file", "filename")


@dataclass(frozen=True, order=True)
class Item:
    key: str
    source: str


def plan_inputs(inputs: list[str]) -> list[Item]:
    """Expand ``inputs`` into items, sorted by key; UsageError for a missing input, an
    unreadable manifest or a key given twice."""
    if not inputs:
        raise UsageError("no inputs")
    found: dict[str, str] = {}
    for name in inputs:
        path = Path(name)
        if path.is_dir():
            items = [Item(p.relative_to(path).as_posix(), str(p)) for p in _walk(path, AUDIO_SUFFIXES)]
        elif path.suffix.lower() in MANIFEST_SUFFIXES:
            items = _manifest(path)
        elif path.exists():
            items = [Item(path.name, name)]
        else:
            raise UsageError(f"{name}: no such file or directory")
        for item in items:
            other = found.setdefault(item.key, item.source)
            if other != item.source:
                raise UsageError(f"{other} and {item.source} both have the key {item.key!r} "
                                 "(give them in separate directories or a manifest with a key column)")
    # absolute: workers and Ray actors may run in other folders than this process
    return sorted(Item(k, os.path.abspath(s)) for k, s in found.items())


def _manifest(path: Path) -> list[Item]:
    """Items listed in a text file (a path per line; ``#`` comments), CSV/TSV with a
    header naming a path column, or JSON lines. Relative paths are relative to the
    manifest's folder."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: cannot read the manifest: {getattr(exc, 'strerror', None) or exc}") from None
    suffix = path.suffix.lower()
    entries: list[tuple[str | None, str]] = []  # (key or None, path as written)
    if suffix == ".jsonl":
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise UsageError(f"{path}:{n}: not JSON: {exc.msg}") from None
                if not isinstance(record, dict):
                    raise UsageError(f"{path}:{n}: not a JSON object")
                entries.append((record.get("key"), _field(record, path, n)))
    elif suffix in (".csv", ".tsv"):
        rows = csv.DictReader(text.splitlines(), delimiter="\t" if suffix == ".tsv" else ",")
        if not rows.fieldnames or not any(f in rows.fieldnames for f in PATH_FIELDS):
            raise UsageError(f"{path}: its header names no path column (one of: {', '.join(PATH_FIELDS)})")
        for n, record in enumerate(rows, 2):
            entries.append((record.get("key") or None, _field(record, path, n)))
    else:
        for line in text.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                entries.append((None, line))
    items = []
    for key, written in entries:
        source = Path(written) if Path(written).is_absolute() else path.parent / written
        items.append(Item(key or PurePosixPath(written).as_posix().lstrip("/"), str(source)))
    return items


def _field(record: dict, path: Path, n: int) -> str:
    for field in PATH_FIELDS:
        if isinstance(record.get(field), str) and record[field]:
            return record[field]
    raise UsageError(f"{path}:{n}: no path (one of: {', '.join(PATH_FIELDS)})")
