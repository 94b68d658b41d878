"""Small file-system helpers shared by the stages that write files."""

from __future__ import annotations

import os
from pathlib import Path


def current_umask() -> int:
    """The process's umask (reading it means setting it; it is put back at once)."""
    mask = os.umask(0)
    os.umask(mask)
    return mask


def with_default_permissions(*paths: str | Path) -> None:
    """Give files the permissions a plain `open()` would (0644 under the usual umask).

    safetensors writes its files with mode 0600, so a model folder shared with other users or
    copied into a container could not be read there, while its other files could.
    """
    mode = 0o666 & ~current_umask()
    for path in paths:
        if Path(path).is_file():
            os.chmod(path, mode)
