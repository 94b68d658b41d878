"""Converted models, cached by the content of the model they come from.

A model folder written by `qatune train` holds PyTorch weights; the OpenVINO engine needs
its own form of them. Rather than asking users for an export step, the first load converts
the weights (about 3 s for all-MiniLM-L6-v2) and keeps the result under
`<qatune cache>/openvino/<key>/` (the first 32 hex digits of a SHA-256 of the weights,
config.json, the tokenizer's inputs and the versions of qatune and openvino; for ONNX, of the
weights, config.json and qatune's version): a retrained model, or another
openvino, gets its own entry; a copied or renamed folder finds its conversion again.

Entries are written into a temporary folder and renamed into place, so that two processes
converting the same model at once each see a whole entry or none.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

from qatune.files import current_umask

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


def cached_folder(root: Path, key: str, complete: Callable[[Path], bool], write: Callable[[Path], None]) -> Path:
    """The cache entry `root/key`, written by `write(folder)` unless `complete(entry)` says it is there."""
    entry = root / key[:32]
    if complete(entry):
        return entry
    root.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{key[:12]}-", dir=root))
    try:
        write(scratch)
        os.chmod(scratch, 0o777 & ~current_umask())  # mkdtemp makes it private; the files are not
        if complete(entry):  # another process wrote it meanwhile: keep theirs
            return entry
        if entry.exists():  # incomplete, from a run that was stopped mid-way
            shutil.rmtree(entry, ignore_errors=True)
        try:
            os.rename(scratch, entry)
        except OSError:  # another process put its entry there first: use that one
            if not complete(entry):
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return entry
