"""File helpers shared by the stages (named so as not to shadow the standard ``io``).

Atomic writes (a temporary file in the same directory, then ``os.replace``), and the
small file helpers the stages share: CSV text, file digests, safe loading of torch files and
a check that a directory takes writes.

Every stage writes its outputs through :func:`write_files` (or the one-file forms built on it,
:func:`write_bytes`, :func:`write_text`, :func:`write_json`, :func:`torch_save`) or, for a
directory of outputs, :func:`write_dir`. A write that fails (a full disk, a read-only mount, no
permission) is a :class:`WriteError` naming the file (exit 2, no traceback), and the previous
outputs stay as they were: nothing is renamed into place until every file of the set is written."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import math
import os
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it over ``path`` only on success."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = _temporary(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


class WriteError(UserError):
    """An output could not be written; the message names the file and why."""

    def __init__(self, path, reason: str, hint: str = ""):
        self.path, self.reason = path, reason
        super().__init__(f"{path}: cannot write: {reason}" + (f"; {hint}" if hint else ""))


@contextlib.contextmanager
def writing(path, hint: str = "") -> Iterator[None]:
    """An OSError inside is a :class:`WriteError` naming ``path`` (exit 2, no traceback); ``hint``,
    what the user can do, is added to the message (to an inner WriteError's too)."""
    try:
        yield
    except WriteError as exc:
        if not hint:
            raise
        raise WriteError(exc.path, exc.reason, hint) from None
    except OSError as exc:
        raise WriteError(path, exc.strerror or str(exc), hint) from None


def _fill(path: Path, data: bytes) -> None:
    """Write ``data`` into a new (temporary) file: the one place output bytes reach the disk."""
    with open(path, "wb") as f:
        f.write(data)


def _temporary(path: Path) -> Path:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should be as readable as any file
    return Path(tmp)


def write_files(files: dict) -> None:
    """Write a stage's outputs, path -> bytes or text: all of them or none. Each goes to a temporary
    file beside it, and only once every one is written are they renamed into place, so a failure
    leaves the previous outputs as they were; it is a WriteError naming the file."""
    temps: dict[Path, Path] = {}
    try:
        for path, data in files.items():
            path = Path(path)
            with writing(path):
                path.parent.mkdir(parents=True, exist_ok=True)
                temps[path] = _temporary(path)
                _fill(temps[path], data.encode() if isinstance(data, str) else data)
        for path, tmp in temps.items():
            with writing(path):
                os.replace(tmp, path)
    finally:
        for tmp in temps.values():
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def write_dir(directory, files: dict[str, bytes | str]) -> list[Path]:
    """Replace ``directory`` by one holding exactly ``files`` (name -> bytes or text): written into a
    temporary directory beside it, then swapped in whole. A failure leaves the previous directory as
    it was, and a crash between the two renames leaves none: never a partial set that looks complete."""
    directory = Path(directory)
    with writing(directory):
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", suffix=".tmp", dir=directory.parent))
    old = staging.with_name(staging.name.replace(".tmp", ".old"))
    try:
        os.chmod(staging, 0o777 & ~_UMASK)
        for name, data in files.items():
            with writing(directory / name):
                (staging / name).parent.mkdir(parents=True, exist_ok=True)
                _fill(staging / name, data.encode() if isinstance(data, str) else data)
        with writing(directory):
            if directory.exists():
                os.replace(directory, old)
            os.replace(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)
    return [directory / name for name in files]


def write_bytes(path, data: bytes) -> None:
    write_files({path: data})


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def non_finite(obj, parts=()) -> Iterator[tuple[tuple, float]]:
    """(key path, value) of every NaN or infinite float in ``obj``, at any depth."""
    if isinstance(obj, float) and not math.isfinite(obj):
        yield parts, obj
    elif isinstance(obj, dict):
        for key, value in obj.items():
            yield from non_finite(value, (*parts, key))
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            yield from non_finite(value, (*parts, i))


def json_text(obj, what="") -> str:
    """Strict JSON (no NaN or Infinity, which other readers refuse); a non-finite number is a bug in
    the caller, and the ValueError names its key."""
    try:
        return json.dumps(obj, indent=2, sort_keys=True, allow_nan=False) + "\n"
    except ValueError:
        bad = [".".join(map(str, parts)) + f" = {value}" for parts, value in non_finite(obj)]
        raise ValueError(f"{what or 'JSON output'}: not a finite number: {', '.join(bad)}; a bug, "
                         "not written") from None


def write_json(path, obj) -> None:
    write_text(path, json_text(obj, str(path)))


def read_json(path, hint: str = ""):
    """A JSON file the pipeline wrote; a missing or unreadable one is a UserError naming it."""
    path = Path(path)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path} is missing" + (f": {hint}" if hint else "")) from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path} cannot be read: {exc}") from None


def torch_save(obj, path) -> None:
    import torch  # here, not at the top: the analysis stages use this module without torch

    # Through a buffer: torch.save names the zip's root folder after the file it writes,
    # and a random temporary name would make identical objects give different bytes.
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_bytes(path, buffer.getvalue())


def csv_text(rows: list[dict], columns) -> str:
    """Rows as CSV text with a header, "\n" line ends; missing keys are left empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(columns), lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def file_sha256(path) -> str:
    """sha256 of a file's bytes, read in blocks (prepared datasets can be hundreds of MB)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def torch_load(path, what: str, hint: str = ""):
    """A ``torch.save`` file of tensors and plain types (``weights_only``); a bad file is a UserError.

    ``what`` names the kind of file (``a prepared dataset``); the message reads
    ``{path}: not {what}: {why}[; {hint}]``. torch.save writes a zip archive:
    anything else (an empty or cut-off file, random bytes) is refused before torch.load guesses
    at an old format, and torch's advice to retry with weights_only=False, which would run the
    file's code, is never passed on.
    """
    import torch  # here, not at the top: see torch_save

    path = Path(path)

    def bad(why: str) -> UserError:
        return UserError(f"{path}: not {what}: {why}" + (f"; {hint}" if hint else ""))

    if path.stat().st_size == 0:
        raise bad("the file is empty")
    if not zipfile.is_zipfile(path):
        raise bad("not a torch.save zip archive (cut off, or another kind of file)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # zip, pickle and unsafe-type errors alike
        text = str(exc).strip()
        if "weights_only" in text or "Weights only" in text:
            glob = re.search(r"Unsupported global: GLOBAL (\S+)", text)
            why = f"it holds {glob[1] if glob else 'an object'}, which {what} never holds; not loaded"
        else:
            why = f"unreadable ({text.splitlines()[0] if text else type(exc).__name__})"
        raise bad(why) from None


def check_writable(directory) -> None:
    """Create ``directory`` and write, then remove, a small probe file in it: a UserError naming
    the directory if it cannot be made, takes no writes (read-only, no permission) or is full."""
    directory = Path(directory)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        write_bytes(directory / ".write-probe", b"\0" * 65536)
        (directory / ".write-probe").unlink()
    except OSError as exc:
        raise UserError(f"{directory}: cannot write here: {exc.strerror or exc}") from None
    except WriteError as exc:
        raise UserError(f"{directory}: cannot write here: {exc.reason}") from None
