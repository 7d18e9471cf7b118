"""The data stage: ``download`` fetches and verifies raw files, ``prepare`` writes one tensors file.

Every dataset is one row of :data:`datasets.DATASETS`. ``download`` tries its sources in order (a
directory the user names, the offline copy, the official URLs) until every raw file is
there and verifies; a file only replaces its predecessor once its checksum matches.
``prepare`` re-verifies the raw files, makes a seeded, stratified train/val/test split and
saves uint8 images plus per-channel mean/std.

Neither writes a path of this machine into a file: the raw dir's ``SOURCE`` records the kind
of each source that delivered files ("source-dir", "offline", "download URL"), and the
prepared file depends on the raw files' contents only, not on where they lie or came from.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import http.client
import io as _io
import os
import pickle
import struct
import sys
import tarfile
import tempfile
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from . import fileio
from .datasets import DATASETS, Dataset
from .errors import UserError
from .prepared import SPLITS, load_prepared  # noqa: F401  (the format: data.load_prepared)

TIMEOUT_S = 60  # per socket read: a dead server fails fast enough, a slow one still finishes


class SourceError(UserError):
    """One source could not deliver a good file; ``download`` goes on to the next one."""


# -- integrity ------------------------------------------------------------------------------


def _check(label, check: str, data: bytes) -> None:
    algo, want = check.split(":")
    got = hashlib.new(algo, data).hexdigest()
    if got != want:
        raise SourceError(f"{label}: checksum mismatch: expected {algo} {want}, got {got}; not kept")


def _payload(path: Path, check: str, label=None) -> bytes:
    """The verified payload of a raw file (gunzipped if .gz); SourceError names ``label`` or the file."""
    label = label or path
    data = payload = path.read_bytes()
    if check.startswith("md5:"):
        _check(label, check, data)
    if str(label).endswith(".gz"):
        try:
            payload = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            raise SourceError(f"{label}: not a valid gzip file ({exc})") from None
    if check.startswith("sha256:"):
        _check(label, check, payload)
    return payload


def _good(path: Path, check: str) -> bool:
    """Whether a raw file is present and verifies; a bad one is deleted so nothing passes for data."""
    if not path.is_file():
        return False
    try:
        _payload(path, check)
        return True
    except SourceError as exc:
        print(f"{exc}; deleting it", file=sys.stderr)
        path.unlink()
        return False


# -- download -------------------------------------------------------------------------------


def _fetch(base: str, name: str, dest: Path, check: str) -> None:
    """Copy ``base/name`` to ``dest`` through a temporary file; rename only once it verifies."""
    src = f"{base.rstrip('/')}/{name}"
    if "://" in base:
        print(f"fetching {src}", file=sys.stderr)
        try:
            stream = urllib.request.urlopen(src, timeout=TIMEOUT_S)
        except urllib.error.HTTPError as exc:
            raise SourceError(f"{name}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            raise SourceError(f"{name}: unreachable ({getattr(exc, 'reason', exc)})") from None
        size = stream.length
    elif Path(src).is_file():
        stream, size = open(src, "rb"), Path(src).stat().st_size
    else:
        raise SourceError(f"no {name} there")
    # A byte-count bar for downloads on a terminal (CIFAR is 170 MB); silent in logs and copies.
    bar = None
    if "://" in base and sys.stderr.isatty():
        from tqdm import tqdm

        bar = tqdm(total=size, desc=name, unit="B", unit_scale=True, file=sys.stderr)
    with stream, fileio.atomic_path(dest) as tmp:
        got = 0
        with open(tmp, "wb") as f:
            try:
                while chunk := stream.read(1 << 20):
                    f.write(chunk)
                    got += len(chunk)
                    if bar is not None:
                        bar.update(len(chunk))
            except (OSError, http.client.HTTPException) as exc:  # resets, timeouts, IncompleteRead
                raise SourceError(f"{name}: transfer cut off after {got} bytes ({exc!r}); not kept") from None
            finally:
                if bar is not None:
                    bar.close()
        if size is not None and got != size:
            raise SourceError(f"{name}: transfer cut off after {got} of {size} bytes; not kept")
        if name.endswith(".tar.gz"):
            _check(name, check, tmp.read_bytes())  # the archive itself; members are checked one by one
        else:
            _payload(tmp, check, label=name)


def _fetch_archive(ds: Dataset, base: str, out: Path) -> None:
    """Fetch the archive into a staging dir, check it, extract it safely, check and move the members."""
    name, md5 = ds.archive
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as staging:
        staging = Path(staging)
        _fetch(base, name, staging / name, f"md5:{md5}")
        try:
            with tarfile.open(staging / name) as tar:
                tar.extractall(staging / "x", filter="data")  # refuses ../, absolute paths, odd links
        except tarfile.FilterError as exc:
            raise SourceError(f"{name}: refused to extract ({exc})") from None
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise SourceError(f"{name}: not a readable tar archive ({exc})") from None
        for member, check in ds.files.items():
            src = staging / "x" / member
            if not src.is_file():
                raise SourceError(f"{name}: has no member {member}")
            _payload(src, check, label=member)
        for member in ds.files:
            (out / member).parent.mkdir(parents=True, exist_ok=True)
            os.replace(staging / "x" / member, out / member)  # same filesystem: atomic


def _sources(name: str, ds: Dataset, source_dir) -> list[tuple[str, str, str, str]]:
    """(label, location, hint when it is missing, kind for SOURCE), in the order they are tried.

    The kind names no local path, so the raw dir's bytes are the same on every machine.
    """
    found = []
    user = source_dir or os.environ.get("NLA_DATA_DIR")
    if user:
        label = "--source-dir" if source_dir else "NLA_DATA_DIR"
        if (Path(user) / name).is_dir():
            found.append((label, str(Path(user) / name), "", "source-dir"))
        found.append((label, str(user), "", "source-dir"))
    if ds.offline:
        found.append(("offline", *ds.offline, "offline"))
    found += [("download", url, "", f"download {url}") for url in ds.urls]
    return found


def download(name: str, out, source_dir=None, force: bool = False) -> None:
    ds, out = DATASETS[name], Path(out)
    todo = [f for f, check in ds.files.items() if force or not _good(out / f, check)]
    if not todo:
        print(f"{name}: all {len(ds.files)} raw files in {out} verify; nothing to fetch")
        return
    tried, used = [], {}  # used: the sources that delivered files, in order -> their kind
    for label, base, hint, kind in _sources(name, ds, source_dir):
        where = f"{label} {base}"
        if "://" not in base and not Path(base).is_dir():
            tried.append(f"  {where}: no such directory" + (f" (to get it: {hint})" if hint else ""))
            continue
        try:
            if ds.archive:
                _fetch_archive(ds, base, out)
                todo = []
            while todo:  # files that verify stay, so a later source only fetches what is left
                _fetch(base, todo[0], out / todo[0], ds.files[todo[0]])
                todo.pop(0)
                used[where] = kind
        except SourceError as exc:
            tried.append(f"  {where}: {exc}")
            continue
        used[where] = kind
        fileio.write_text(out / "SOURCE", "".join(f"{k}\n" for k in dict.fromkeys(used.values())))
        print(f"{name}: {len(ds.files)} raw files verified in {out} (from {', '.join(used)})")
        return
    wanted = ds.archive[0] if ds.archive else ", ".join(ds.files)
    raise UserError(
        f"cannot get {name}; every source failed:\n" + "\n".join(tried)
        + f"\nPut {wanted} in a directory and pass --source-dir DIR or set NLA_DATA_DIR=DIR."
    )


# -- readers: verified payloads -> (train_x, train_y, test_x, test_y, classes) ------------------


def _idx(payload: bytes, label: str) -> torch.Tensor:
    """An idx file of unsigned bytes (MNIST's format): magic 0 0 8 ndim, big-endian int32 dims."""
    if len(payload) < 4 or payload[:3] != b"\0\0\x08":
        raise UserError(f"{label}: not an idx file of unsigned bytes")
    ndim = payload[3]
    dims = struct.unpack(f">{ndim}I", payload[4:4 + 4 * ndim])
    data = np.frombuffer(payload, np.uint8, offset=4 + 4 * ndim)
    if data.size != np.prod(dims):
        raise UserError(f"{label}: idx header says {dims}, but it holds {data.size} values")
    return torch.from_numpy(data.reshape(dims).copy())


def _read_idx(p: dict[str, bytes], ds):
    (xi, xb), (yi, yb), (ti, tb), (ui, ub) = p.items()
    x, tx = (_idx(b, n).unsqueeze(1) for n, b in ((xi, xb), (ti, tb)))
    return x, _idx(yb, yi).long(), tx, _idx(ub, ui).long(), ds.classes


class _ArrayUnpickler(pickle.Unpickler):
    """CIFAR's batches are pickles, which can run code: allow numpy arrays and nothing else."""

    SAFE = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
            ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode")}  # encode: Python 3's bytes

    def find_class(self, module, name):
        if (module, name) not in self.SAFE:
            raise pickle.UnpicklingError(f"refusing {module}.{name}")
        return super().find_class(module, name)


def _read_cifar(p: dict[str, bytes], ds):
    """Members: the training batches, then the test batch, then the meta file with the class names."""
    loaded = []
    for f, b in p.items():
        try:
            # latin1, as torchvision: Python 2's str (the keys, the array data) loads as it was written
            loaded.append(_ArrayUnpickler(_io.BytesIO(b), encoding="latin1").load())
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
            raise UserError(f"{f}: not a CIFAR pickle ({exc})") from None
    *train, test, meta = loaded

    def xy(batches):
        x = np.concatenate([b["data"] for b in batches]).reshape(-1, *ds.shape)
        y = np.concatenate([b.get("fine_labels", b.get("labels")) for b in batches])
        return torch.from_numpy(x), torch.from_numpy(y.astype(np.int64))

    return *xy(train), *xy([test]), tuple(meta.get("fine_label_names", meta.get("label_names")))


def _read_svhn(p: dict[str, bytes], ds):
    from scipy.io import loadmat  # only SVHN needs it

    def xy(b):
        m = loadmat(_io.BytesIO(b))  # X: 32x32x3xN, y: Nx1 with 10 for the digit 0
        return torch.from_numpy(m["X"].transpose(3, 2, 0, 1).copy()), torch.from_numpy(m["y"].ravel() % 10).long()

    return *xy(p["train_32x32.mat"]), *xy(p["test_32x32.mat"]), ds.classes


def _read_digits(p: dict[str, bytes], ds):
    rows = np.loadtxt(_io.BytesIO(p["digits.csv.gz"]), delimiter=",", dtype=np.int64)
    x = (rows[:, :-1] * 255 + 8) // 16  # 0..16 -> 0..255, rounded
    x = torch.from_numpy(x.astype(np.uint8).reshape(-1, *ds.shape))
    return x, torch.from_numpy(rows[:, -1]), None, None, ds.classes


READERS = {"idx": _read_idx, "cifar": _read_cifar, "svhn": _read_svhn, "digits": _read_digits}


# -- prepare --------------------------------------------------------------------------------


def _stratified_order(y: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """A seeded permutation whose every prefix and every run holds the classes in proportion.

    Each sample's key is (its rank within its class in a random order + 0.5) / class size;
    sorting by key interleaves the classes evenly.
    """
    perm = torch.randperm(len(y), generator=g)
    yp = y[perm]
    counts = torch.bincount(yp)
    by_class = torch.argsort(yp, stable=True)
    rank = torch.empty_like(perm)
    rank[by_class] = torch.arange(len(y)) - (torch.cumsum(counts, 0) - counts)[yp[by_class]]
    return perm[torch.argsort((rank.double() + 0.5) / counts[yp], stable=True)]


def _mean_std(x: torch.Tensor) -> tuple[list[float], list[float]]:
    """Per-channel mean and std in [0,1] units, exact: from a histogram of the 256 values."""
    v = torch.arange(256, dtype=torch.float64)
    mean, std = [], []
    for c in range(x.shape[1]):
        h = torch.bincount(x[:, c].reshape(-1), minlength=256).double()
        m = (h * v).sum() / h.sum()
        mean.append(float(m / 255))
        std.append(float(((h * v * v).sum() / h.sum() - m * m).clamp_min(0).sqrt() / 255))
    return mean, std


def check_pool(factor: int, height: int, width: int) -> None:
    """A pool factor must divide both sides of the images: any other would drop pixels at the edge."""
    divisors = [k for k in range(1, min(height, width) + 1) if height % k == 0 and width % k == 0]
    if factor not in divisors:
        raise UserError(f"--pool {factor} does not divide the {height}×{width} images (it would drop pixels at "
                        f"the edge); use one of {', '.join(map(str, divisors))}")


def pool_images(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Average ``factor``×``factor`` blocks of uint8 images, rounded back to uint8."""
    check_pool(factor, *x.shape[2:])
    if factor == 1:
        return x
    pooled = torch.nn.functional.avg_pool2d(x.to(torch.float32), factor)
    return pooled.round_().to(torch.uint8).contiguous()


def prepare(name: str, raw, out, *, train_size=None, val_size=None, test_size=None, seed: int = 0,
            pool: int = 1) -> dict:
    """Split ``raw`` into train/val/test (stratified, by ``seed``), average-pool by ``pool``, and save."""
    ds, raw = DATASETS[name], Path(raw)
    check_pool(pool, *ds.shape[1:])
    payloads = {}
    for f, check in ds.files.items():
        if not (raw / f).is_file():
            raise UserError(f"{raw / f}: missing; run `python -m nonlinear_advantage download {name} --out {raw}`")
        try:
            payloads[f] = _payload(raw / f, check)
        except SourceError as exc:
            raise UserError(f"{exc}\nRun `python -m nonlinear_advantage download {name} --out {raw}` again.") from None
    x, y, tx, ty, classes = READERS[ds.reader](payloads, ds)
    del payloads
    if x.shape[1:] != ds.shape or (tx is not None and tx.shape[1:] != ds.shape):
        raise UserError(f"{raw}: images have shape {tuple(x.shape[1:])}, expected {ds.shape}")

    g = torch.Generator().manual_seed(seed)
    order = _stratified_order(y, g)
    n_val = ds.val_size if val_size is None else val_size
    if tx is None:  # one pool: the test set is carved out of it as well
        n_test = test_size or ds.test_size
        test_sel, order, tx, ty = order[:n_test], order[n_test:], x, y
    else:
        n_test = test_size or len(ty)
        if n_test > len(ty):
            raise UserError(f"--test-size {n_test}: {name} has only {len(ty)} test images")
        test_sel = _stratified_order(ty, g)[:n_test]
    if n_val + (train_size or 1) > len(order):
        asked = f"--val-size {n_val}" + (f" + --train-size {train_size}" if train_size else " and a training set")
        raise UserError(f"{asked}: {name} has only {len(order)} images left for them")
    val_sel, train_sel = order[:n_val], order[n_val:][:train_size]

    def take(x, y, sel):  # sorted, so the file keeps the source's order; indexing copies
        sel = sel.sort().values
        return x[sel].contiguous(), y[sel].contiguous()

    (train_x, train_y), (val_x, val_y), (test_x, test_y) = (
        take(x, y, train_sel), take(x, y, val_sel), take(tx, ty, test_sel))
    train_x, val_x, test_x = (pool_images(v, pool) for v in (train_x, val_x, test_x))
    mean, std = _mean_std(train_x)
    # Nothing about the raw dir's path or the source that served it (raw/SOURCE): identical
    # raw files give identical bytes, on any machine and from any source.
    prepared = dict(name=name, train_x=train_x, train_y=train_y, val_x=val_x, val_y=val_y, test_x=test_x,
                    test_y=test_y, classes=list(classes), mean=mean, std=std, seed=seed, pool=pool)
    fileio.torch_save(prepared, out)  # byte-deterministic: preparing twice gives the same file
    print(f"{name}: train {len(train_y)}, val {len(val_y)}, test {len(test_y)} images of {tuple(train_x.shape[1:])}"
          f" -> {out}")
    return prepared


# -- the trainer's side ------------------------------------------------------------------------

# -- CLI --------------------------------------------------------------------------------------


def _positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 1, got {text!r}")
    return int(text)


def add_cli(subparsers) -> None:
    p = subparsers.add_parser(
        "download", help="fetch a dataset's raw files and verify their checksums",
        description="Sources, in order: --source-dir (or $NLA_DATA_DIR), the offline copy "
        "(scikit-learn for digits, Debian's dataset-fashion-mnist), the official URLs.")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--out", required=True, type=Path, help="raw directory, e.g. data/raw/DATASET")
    p.add_argument("--source-dir", type=Path, help="a directory holding the raw files (default: $NLA_DATA_DIR)")
    p.add_argument("--force", action="store_true", help="fetch again even when the raw files verify")
    p.set_defaults(func=lambda a: download(a.dataset, a.out, a.source_dir, a.force))

    p = subparsers.add_parser("prepare", help="split and pack a dataset into one tensors file")
    p.add_argument("dataset", choices=DATASETS)
    p.add_argument("--raw", required=True, type=Path, help="the download's --out")
    p.add_argument("--out", required=True, type=Path, help="e.g. data/prepared/DATASET.pt")
    p.add_argument("--train-size", type=_positive, help="subsample the training set (default: all left)")
    p.add_argument("--val-size", type=_positive, help="carved from the training set (default per dataset)")
    p.add_argument("--test-size", type=_positive, help="subsample the test set (default per dataset)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--pool", type=_positive, default=1,
                   help="average-pool the images by this factor (2: 28x28 -> 14x14; default 1: as they are)")
    p.set_defaults(func=_prepare_cmd)


def _prepare_cmd(a) -> None:
    prepare(a.dataset, a.raw, a.out, train_size=a.train_size, val_size=a.val_size, test_size=a.test_size,
            seed=a.seed, pool=a.pool)
