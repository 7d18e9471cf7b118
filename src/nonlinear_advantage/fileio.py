"""File helpers shared by the stages (named so as not to shadow the standard ``io``).

Atomic writes (a temporary file in the same directory, then ``os.replace``), and the
small file helpers the stages share: CSV text, file digests, safe loading of torch files and
a check that a directory takes writes."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import os
import re
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
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; outputs should be as readable as any file
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_bytes(path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path, text: str) -> None:
    write_bytes(path, text.encode())


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


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
