"""Small file-system helpers shared by the stages that write files."""

from __future__ import annotations

import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from qatune.errors import ArgumentTypeError, SettingsError


def check_path_argument(name: str, value: object) -> None:
    """A Python argument that names a file or folder must be a str or a path: None, a number or
    a list would otherwise be taken for another model or fail deep inside a library."""
    if isinstance(value, (str, os.PathLike)) and str(value).strip():
        return
    raise ArgumentTypeError(f"{name} must be a path (a str or pathlib.Path) of a file or folder, got {value!r}")


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


@contextmanager
def naming_the_file(path: str | Path) -> Iterator[None]:
    """Let an OSError raised while writing `path` name it: a full disk's error comes from the
    write itself, without a file name, and the command line then could not say which file."""
    try:
        yield
    except OSError as error:
        if error.filename is not None:
            raise
        raise OSError(error.errno, error.strerror or str(error), str(path)) from None


# --- output paths, checked before any slow work --------------------------------------------------
#
# The rule of every command: an output FILE must go into a folder that exists (qatune creates no
# folders for it, as most Unix tools do not, so a mistyped path is an error, not a new tree of
# folders); an output FOLDER (a model, evaluate's --output) is created with its parents.

# Scratch folders of `replacing_contents`: what a killed run leaves behind, not content of its own.
SCRATCH_PREFIX = ".qatune-"
# What marks a folder as holding a model, whose contents `--overwrite` may replace.
MODEL_MARKERS = ("config.json", "qatune.json")


def check_output_file(option: str, path: str | Path) -> Path:
    """Refuse, with what to do, an output file that cannot be written: a folder in its place, its
    folder missing (or a file), or no permission to write there."""
    path = Path(path)
    if path.is_dir():
        raise SettingsError(
            f"{option}: {path} is a folder; give the path of a file to write (inside it or elsewhere)"
        )
    _check_folder_exists(option, path)
    _check_writable(option, path.parent, "write in")
    if path.exists() and not os.access(path, os.W_OK):
        raise SettingsError(
            f"{option}: cannot replace {path} (no write permission); choose another path or change its permissions"
        )
    return path


def check_report_file(option: str, path: str | Path) -> Path:
    """`check_output_file`, and refuse to replace a file that is not an HTML page: a data file
    named by mistake (`qatune train --report data.json`) would be lost for a report."""
    path = check_output_file(option, path)
    if path.is_file() and path.stat().st_size > 0 and not _is_an_html_page(path):
        raise SettingsError(
            f"{option}: {path} exists and is not an HTML page, and the report would replace it; "
            "give the report a name of its own (ending in .html), or move that file away first"
        )
    return path


def _is_an_html_page(path: Path) -> bool:
    with open(path, "rb") as file:
        start = file.read(512).lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html"))


def check_distinct_paths(outputs, inputs=()) -> None:
    """Refuse outputs that would replace an input file or each other: `outputs` and `inputs`
    are (option, path) pairs, a path of None not given. Paths are compared as the files they
    name (a symlink or another spelling of the same path is the same file)."""
    inputs = [(option, _as_file(path)) for option, path in inputs if path is not None]
    outputs_so_far: list[tuple[str, Path]] = []
    for option, path in outputs:
        if path is None:
            continue
        file = _as_file(path)
        for other, taken in inputs:
            if _same_file(file, taken):
                raise SettingsError(
                    f"{option}: {path} is the {other} file itself, which this would replace; write to another file"
                )
        for other, taken in outputs_so_far:
            if _same_file(file, taken):
                raise SettingsError(f"{option}: {path} is also the {other} file; give each output a file of its own")
        outputs_so_far.append((option, file))


def _as_file(path: str | Path) -> Path:
    return Path(path).expanduser().resolve()


def _same_file(one: Path, other: Path) -> bool:
    if one == other:
        return True
    try:  # hard links: two names, one file
        return one.exists() and other.exists() and os.path.samefile(one, other)
    except OSError:
        return False


def check_output_folder(option: str, path: str | Path) -> Path:
    """Refuse, with what to do, an output folder that cannot be made or written: a file in its
    place or in the place of a parent folder, or no permission where it goes."""
    path = Path(path)
    existing = _first_existing(path)
    if not existing.is_dir():
        _not_a_folder(option, existing, path, "create")
    _check_writable(option, existing, "write in" if existing == path else "create folders in")
    return path


def check_folder_to_replace(
    option: str, folder: str | Path, *, overwrite: bool, source: str | Path, overwrite_name: str = "--overwrite"
) -> None:
    """Refuse to write a model into a folder that holds anything, unless `overwrite`; and even then
    refuse a folder that holds no model, or holds the `source` model itself. `overwrite_name` is
    how the caller spells `overwrite` in messages (a flag, or a Python argument)."""
    folder = Path(folder)
    if not folder.is_dir():
        return
    check_not_holding_source(option, folder, source)
    contents = folder_contents(folder)
    if contents and not overwrite:
        raise SettingsError(
            f"{option}: {folder} is not empty (it holds {shown_contents(contents)}): pass {overwrite_name} to "
            f"replace what it holds, or choose another {option}"
        )
    if contents and not holds_a_model(folder):
        raise SettingsError(
            f"{option}: {folder} holds files but no model (no {' or '.join(MODEL_MARKERS)}), and {overwrite_name} "
            f"replaces only an earlier model; empty the folder yourself or choose another {option}"
        )


def check_not_holding_source(option: str, folder: str | Path, source: str | Path | None) -> None:
    """Refuse an output folder that is, or holds, the model `source` the new files are made from."""
    if source is None or not Path(source).expanduser().exists():  # None, or a hub id
        return
    folder, source_path = Path(folder), Path(source).expanduser().resolve()
    if source_path.is_relative_to(folder.resolve()):
        what = "is the model folder itself" if source_path == folder.resolve() else f"holds the model {source}"
        raise SettingsError(f"{option}: {folder} {what}, which the new files would replace; choose another {option}")


def folder_contents(folder: Path) -> list[str]:
    """The names a folder holds (sorted), but the scratch folders a killed run left."""
    return sorted(entry.name for entry in folder.iterdir() if not entry.name.startswith(SCRATCH_PREFIX))


def shown_contents(contents: list[str]) -> str:
    return ", ".join(contents[:3]) + (f" and {len(contents) - 3} more" if len(contents) > 3 else "")


def holds_a_model(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in MODEL_MARKERS)


@contextmanager
def replacing_contents(folder: str | Path) -> Iterator[Path]:
    """A fresh folder inside `folder` to write a model into. When the block ends without error, the
    new files take the place of everything `folder` held; the old ones are removed only then, so a
    failed run leaves them as they were (and removes the folders it created)."""
    folder = Path(folder)
    created = [path for path in (folder, *folder.parents) if not path.exists()]
    folder.mkdir(parents=True, exist_ok=True)
    # inside `folder`, not beside it: moving files out of it never crosses a mount point; and
    # named as `folder`, since what is written there (the model card) names its own folder
    holder = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}new-", dir=folder))
    scratch = holder / folder.resolve().name
    scratch.mkdir()
    try:
        yield scratch
    except BaseException:
        shutil.rmtree(holder, ignore_errors=True)
        for path in created:  # innermost first; only while empty
            try:
                path.rmdir()
            except OSError:
                break
        raise
    old = Path(tempfile.mkdtemp(prefix=f"{SCRATCH_PREFIX}old-", dir=folder))
    for entry in folder.iterdir():
        if entry.name not in (holder.name, old.name):
            entry.rename(old / entry.name)
    for entry in scratch.iterdir():
        entry.rename(folder / entry.name)
    shutil.rmtree(holder)
    shutil.rmtree(old)


def _first_existing(path: Path) -> Path:
    """`path`, or the nearest of its parents that exists (the top one always does)."""
    return next((candidate for candidate in (path, *path.parents) if candidate.exists()), Path("."))


def _check_folder_exists(option: str, path: Path) -> None:
    """The folder of the file `path` exists."""
    folder = path.parent
    existing = _first_existing(folder)
    if not existing.is_dir():
        _not_a_folder(option, existing, path, "write")
    if existing != folder:
        raise SettingsError(f"{option}: folder {folder} does not exist; create it or choose another path")


def _not_a_folder(option: str, existing: Path, path: Path, verb: str) -> None:
    """`existing`, the path itself or a folder on the way to it, is a file."""
    cannot = "" if existing == path else f"cannot {verb} {path}: "
    raise SettingsError(f"{option}: {cannot}{existing} is a file, not a folder; choose another path")


def _check_writable(option: str, folder: Path, action: str) -> None:
    if not os.access(folder, os.W_OK | os.X_OK):
        raise SettingsError(
            f"{option}: cannot {action} folder {folder} (no write permission); "
            "choose another path or change its permissions"
        )
