"""Converted models, cached by the content of the model they come from.

A model folder written by `qatune train` holds PyTorch weights; the OpenVINO engine needs
its own form of them. Rather than asking users for an export step, the first load converts
the weights (about 3 s for all-MiniLM-L6-v2) and keeps the result under
`<qatune cache>/openvino/<key>/` (the first 32 hex digits of a SHA-256 of the weights,
config.json, the tokenizer's inputs and the versions of qatune and of the converter: openvino;
for ONNX, under `onnx/`, torch, onnxscript and onnx): a retrained model, another tokenizer or
another converter gets its own entry; a copied or renamed folder finds its conversion again.

Entries are written into a temporary folder and renamed into place, so that two processes
converting the same model at once each see a whole entry or none. An entry the runtime cannot
read (damaged after it was written) is converted again, once. A cache that cannot be written
(a path through a file, a read-only or full disk) raises CacheNotWritable: the engines then
answer with a model converted outside it and warn, so that answering never fails for the cache.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable, TypeVar

from qatune.engines.base import UnreadableGraph
from qatune.errors import ModelError, QATuneError, first_line
from qatune.files import current_umask

T = TypeVar("T")
logger = logging.getLogger("qatune")

FORMAT_VERSION = 1  # bump when what is cached changes meaning
WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
CHUNK = 1 << 20


def content_key(folder: Path, *extra: str) -> str:
    """SHA-256 (hex) of the folder's weights and config.json, with `extra` strings mixed in."""
    digest = hashlib.sha256(f"qatune-engine-cache {FORMAT_VERSION}".encode())
    for text in extra:
        digest.update(b"\0" + text.encode())
    files = sorted({file for pattern in WEIGHT_PATTERNS for file in folder.glob(pattern)}) + [folder / "config.json"]
    for file in files:
        if not file.is_file():
            continue
        digest.update(b"\0" + file.name.encode() + b"\0")
        with open(file, "rb") as handle:
            while chunk := handle.read(CHUNK):
                digest.update(chunk)
    return digest.hexdigest()


class CacheNotWritable(Exception):
    """The cache cannot take a new entry (its path runs through a file, no permission, a full
    disk): the caller answers with a model converted elsewhere and says so."""

    def __init__(self, root: Path, error: BaseException) -> None:
        super().__init__(f"the engine cache {root} cannot be written ({first_line(error)})")
        self.root = root


def cached_folder(root: Path, key: str, complete: Callable[[Path], bool], write: Callable[[Path], None]) -> Path:
    """The cache entry `root/key`, written by `write(folder)` unless `complete(entry)` says it is
    there; CacheNotWritable where the entry cannot be written."""
    entry = root / key[:32]
    if complete(entry):
        return entry
    scratch = _scratch_folder(root, key)
    try:
        _write_entry(root, scratch, write)
        if complete(entry):  # another process wrote it meanwhile: keep theirs
            return entry
        if entry.exists():  # incomplete, from a run that was stopped mid-way
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(scratch, entry)
        except OSError as error:  # another process put its entry there first: use that one
            if not complete(entry):
                raise CacheNotWritable(root, error) from None
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return entry


def load_entry(
    root: Path, key: str, *, complete: Callable[[Path], bool], write: Callable[[Path], None], load: Callable[[Path], T]
) -> T:
    """`load(entry)` of the cache entry `cached_folder` gives. An entry the runtime cannot read
    (UnreadableGraph: damaged after it was written, by a disk error or a copy cut short) is
    removed and written again, once, as damaged cached windows are."""
    entry = cached_folder(root, key, complete, write)
    try:
        return load(entry)
    except UnreadableGraph as error:
        logger.warning("%s: a damaged cache entry (%s); converting the model again", entry, error.reason)
    _remove_entry(root, entry)
    entry = cached_folder(root, key, complete, write)
    try:
        return load(entry)
    except UnreadableGraph as error:
        raise ModelError(
            f"{entry}: the model converted into the engine cache cannot be loaded, even converted again "
            f"({error.reason}); set $QATUNE_CACHE to a folder on another disk"
        ) from None


def _scratch_folder(root: Path, key: str) -> Path:
    """A new private folder in `root` to write an entry into before it is renamed into place."""
    try:
        root.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))
    except OSError as error:
        raise CacheNotWritable(root, error) from None


def _write_entry(root: Path, scratch: Path, write: Callable[[Path], None]) -> None:
    try:
        write(scratch)
        os.chmod(scratch, 0o777 & ~current_umask())  # mkdtemp makes it private; the files are not
    except QATuneError:
        raise  # the conversion's own error (a model it cannot convert), not the cache's
    except (OSError, RuntimeError) as error:  # a full disk: OpenVINO says so with a RuntimeError
        raise CacheNotWritable(root, error) from None


def _remove_entry(root: Path, entry: Path) -> None:
    try:
        shutil.rmtree(entry)
    except FileNotFoundError:
        pass  # another process removed it first
    except OSError as error:
        raise CacheNotWritable(root, error) from None
