"""The data stage, offline: downloads run against a local HTTP server that serves files made here."""

from __future__ import annotations

import dataclasses
import fractions
import gzip
import hashlib
import io
import pickle
import struct
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
import torch

from nonlinear_advantage import data
from nonlinear_advantage.cli import main
from nonlinear_advantage.errors import UserError

DEBIAN = Path(data.DATASETS["fashion_mnist"].offline[0])


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self):
        body = self.server.routes.get(self.path.lstrip("/"))
        if body is None:
            return self.send_error(404)
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.server.cut else body)  # cut: then hang up

    def log_message(self, *args):
        pass


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    monkeypatch.delenv("NLA_DATA_DIR", raising=False)
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.routes, srv.cut, srv.url = {}, False, f"http://127.0.0.1:{srv.server_port}/"
    threading.Thread(target=srv.serve_forever, args=(0.05,), daemon=True).start()
    yield srv
    srv.shutdown()
    srv.server_close()


def idx(array: np.ndarray) -> bytes:
    return bytes([0, 0, 8, array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape) + array.tobytes()


def fake_fashion(monkeypatch, tmp_path, server, n=20, nt=10) -> dict[str, bytes]:
    """Tiny idx files served by ``server``; the table row points at it and at no Debian copy."""
    rng = np.random.default_rng(0)
    payloads = {
        "train-images-idx3-ubyte.gz": idx(rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)),
        "train-labels-idx1-ubyte.gz": idx(np.arange(n, dtype=np.uint8) % 10),
        "t10k-images-idx3-ubyte.gz": idx(rng.integers(0, 256, (nt, 28, 28), dtype=np.uint8)),
        "t10k-labels-idx1-ubyte.gz": idx(np.arange(nt, dtype=np.uint8) % 10),
    }
    files = {name: "sha256:" + hashlib.sha256(p).hexdigest() for name, p in payloads.items()}
    row = dataclasses.replace(data.DATASETS["fashion_mnist"], files=files, urls=(server.url,),
                              offline=(str(tmp_path / "no-debian"), "apt-get install dataset-fashion-mnist"))
    monkeypatch.setitem(data.DATASETS, "fashion_mnist", row)
    server.routes.update({name: gzip.compress(p, mtime=0) for name, p in payloads.items()})
    return dict(server.routes)


def files_in(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


def run(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def test_download_good_fetch_then_prepare(tmp_path, monkeypatch, server, capsys):
    served = fake_fashion(monkeypatch, tmp_path, server)
    raw = tmp_path / "raw"
    assert run(capsys, "download", "fashion_mnist", "--out", raw)[0] == 0
    assert files_in(raw) == sorted([*served, "SOURCE"])
    assert all((raw / name).read_bytes() == body for name, body in served.items())
    assert (raw / "SOURCE").read_text() == f"download {server.url}\n"
    out = tmp_path / "fm.pt"
    assert run(capsys, "prepare", "fashion_mnist", "--raw", raw, "--out", out, "--val-size", 4,
               "--test-size", 6)[0] == 0
    d = data.load_prepared(out)
    assert (d["train_x"].shape, d["val_x"].shape, d["test_x"].shape) == ((16, 1, 28, 28), (4, 1, 28, 28),
                                                                         (6, 1, 28, 28))
    assert "source" not in d  # the prepared bytes depend on the raw files only
    pooled = tmp_path / "fm14.pt"
    assert run(capsys, "prepare", "fashion_mnist", "--raw", raw, "--out", pooled, "--val-size", 4,
               "--test-size", 6, "--pool", 2)[0] == 0
    p = data.load_prepared(pooled)
    assert [p[f"{s}_x"].shape[1:] for s in data.SPLITS] == [(1, 14, 14)] * 3 and p["train_x"].dtype == torch.uint8
    blocks = d["train_x"].float().reshape(16, 1, 14, 2, 14, 2).mean((3, 5))  # each pixel: its 2x2 block's mean
    assert (p["train_x"].float() - blocks).abs().max() <= 0.5 and torch.equal(p["train_y"], d["train_y"])
    assert run(capsys, "prepare", "fashion_mnist", "--raw", raw, "--out", tmp_path / "x.pt", "--pool", 29)[0] == 2


def test_corrupt_payload_rejected_and_good_output_kept(tmp_path, monkeypatch, server, capsys):
    served = fake_fashion(monkeypatch, tmp_path, server)
    raw = tmp_path / "raw"
    assert run(capsys, "download", "fashion_mnist", "--out", raw)[0] == 0
    name = "train-images-idx3-ubyte.gz"
    bad = bytearray(gzip.decompress(served[name]))
    bad[-1] ^= 1
    server.routes[name] = gzip.compress(bytes(bad), mtime=0)
    rc, err = run(capsys, "download", "fashion_mnist", "--out", raw, "--force")
    assert rc == 2 and "Traceback" not in err
    want = data.DATASETS["fashion_mnist"].files[name].split(":")[1]
    assert f"{name}: checksum mismatch: expected sha256 {want}, got {hashlib.sha256(bad).hexdigest()}" in err
    assert (raw / name).read_bytes() == served[name]  # the earlier good file, untouched
    assert files_in(raw) == sorted([*served, "SOURCE"])  # no temporary left behind


def test_cut_off_transfer_leaves_nothing(tmp_path, monkeypatch, server, capsys):
    fake_fashion(monkeypatch, tmp_path, server)
    server.cut = True
    rc, err = run(capsys, "download", "fashion_mnist", "--out", tmp_path / "raw")
    assert rc == 2 and "transfer cut off" in err and "train-images-idx3-ubyte.gz" in err
    assert files_in(tmp_path) == []


def test_every_source_failing_lists_them(tmp_path, monkeypatch, server, capsys):
    fake_fashion(monkeypatch, tmp_path, server)
    server.routes.clear()  # the "official" server answers 404
    (tmp_path / "mine").mkdir()
    monkeypatch.setenv("NLA_DATA_DIR", str(tmp_path / "mine"))
    rc, err = run(capsys, "download", "fashion_mnist", "--out", tmp_path / "raw")
    assert rc == 2 and "Traceback" not in err
    lines = [line for line in err.splitlines() if not line.startswith("fetching ")]
    assert lines[0] == "error: cannot get fashion_mnist; every source failed:"
    assert lines[1] == f"  NLA_DATA_DIR {tmp_path / 'mine'}: no train-images-idx3-ubyte.gz there"
    assert lines[2] == (f"  offline {tmp_path / 'no-debian'}: no such directory"
                        " (to get it: apt-get install dataset-fashion-mnist)")
    assert lines[3] == f"  download {server.url}: train-images-idx3-ubyte.gz: HTTP 404 Not Found"
    assert "NLA_DATA_DIR" in lines[4] and len(lines) == 5


def test_source_dir_comes_first(tmp_path, monkeypatch, server, capsys):
    served = fake_fashion(monkeypatch, tmp_path, server)
    mine = tmp_path / "mine" / "fashion_mnist"  # DIR/DATASET is looked at before DIR
    mine.mkdir(parents=True)
    for name, body in served.items():
        (mine / name).write_bytes(body)
    server.routes.clear()
    raw = tmp_path / "raw"
    assert run(capsys, "download", "fashion_mnist", "--out", raw, "--source-dir", tmp_path / "mine")[0] == 0
    assert (raw / "SOURCE").read_text() == "source-dir\n"  # the kind of source, no path
    assert all((raw / name).read_bytes() == body for name, body in served.items())


def no_local_path(text: str, tmp_path: Path) -> bool:
    return str(tmp_path) not in text and not any(word.startswith("/") for word in text.split())


def test_prepared_bytes_depend_on_raw_files_only(tmp_path, monkeypatch, server, capsys):
    """The same raw files, from four sources into four directories: one prepared file, no paths."""
    served = fake_fashion(monkeypatch, tmp_path, server)
    first = "train-images-idx3-ubyte.gz"
    mine = tmp_path / "elsewhere" / "mine"
    mine.mkdir(parents=True)
    for name, body in served.items():
        (mine / name).write_bytes(body)
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / first).write_bytes(served[first])
    raws = {"download": tmp_path / "a" / "raw", "source-dir": tmp_path / "b" / "deeper" / "raw",
            "env": tmp_path / "c" / "raw", "mixed": tmp_path / "d" / "raw", "by hand": tmp_path / "e" / "raw"}
    assert run(capsys, "download", "fashion_mnist", "--out", raws["download"])[0] == 0
    assert run(capsys, "download", "fashion_mnist", "--out", raws["source-dir"], "--source-dir", mine)[0] == 0
    partial = tmp_path / "partial"  # one file: the rest comes from the server
    assert run(capsys, "download", "fashion_mnist", "--out", raws["mixed"], "--source-dir", partial)[0] == 0
    monkeypatch.setenv("NLA_DATA_DIR", str(mine))
    assert run(capsys, "download", "fashion_mnist", "--out", raws["env"])[0] == 0
    raws["by hand"].mkdir(parents=True)
    for name, body in served.items():
        (raws["by hand"] / name).write_bytes(body)

    sources = {k: (raw / "SOURCE").read_text() for k, raw in raws.items() if k != "by hand"}
    assert sources == {"download": f"download {server.url}\n", "source-dir": "source-dir\n", "env": "source-dir\n",
                       "mixed": f"source-dir\ndownload {server.url}\n"}
    assert all(no_local_path(text, tmp_path) for text in sources.values())
    outs = []
    for i, raw in enumerate(raws.values()):
        outs.append(tmp_path / f"out{i}" / f"fm{i}.pt")  # different names and directories too
        assert run(capsys, "prepare", "fashion_mnist", "--raw", raw, "--out", outs[-1], "--val-size", 4)[0] == 0
    assert len({out.read_bytes() for out in outs}) == 1
    assert str(tmp_path).encode() not in outs[0].read_bytes()


def cifar_tarball(extra: dict[str, bytes] | None = None, n=6) -> tuple[bytes, dict[str, bytes]]:
    """A CIFAR-10-format archive: protocol-2 pickles of dicts of arrays and lists, as CIFAR's own."""
    rng = np.random.default_rng(1)
    members = {}
    for i, name in enumerate(["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5",
                              "test_batch"]):
        batch = {"data": rng.integers(0, 256, (n, 3072), dtype=np.uint8), "labels": [(i + j) % 10 for j in range(n)]}
        members[f"cifar-10-batches-py/{name}"] = pickle.dumps(batch, protocol=2)
    members["cifar-10-batches-py/batches.meta"] = pickle.dumps(
        {"label_names": [f"class{c}" for c in range(10)]}, protocol=2)
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, body in {**members, **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buf.getvalue(), members


def fake_cifar(monkeypatch, server, tarball, members) -> None:
    files = {name: "md5:" + hashlib.md5(body).hexdigest() for name, body in members.items()}
    row = dataclasses.replace(data.DATASETS["cifar10"], files=files, urls=(server.url,),
                              archive=("cifar-10-python.tar.gz", hashlib.md5(tarball).hexdigest()))
    monkeypatch.setitem(data.DATASETS, "cifar10", row)
    server.routes["cifar-10-python.tar.gz"] = tarball


def test_cifar_archive_fetch_extract_prepare(tmp_path, monkeypatch, server, capsys):
    tarball, members = cifar_tarball()
    fake_cifar(monkeypatch, server, tarball, members)
    raw = tmp_path / "raw" / "cifar10"
    assert run(capsys, "download", "cifar10", "--out", raw)[0] == 0
    assert files_in(tmp_path / "raw") == sorted([f"cifar10/{m}" for m in members] + ["cifar10/SOURCE"])
    d = data.prepare("cifar10", raw, tmp_path / "c.pt", val_size=5, seed=0)
    assert (d["train_x"].shape, d["val_x"].shape, d["test_x"].shape) == ((25, 3, 32, 32), (5, 3, 32, 32),
                                                                         (6, 3, 32, 32))
    assert d["classes"] == [f"class{c}" for c in range(10)] and len(d["mean"]) == len(d["std"]) == 3
    test = pickle.loads(members["cifar-10-batches-py/test_batch"])
    assert torch.equal(d["test_x"][0], torch.from_numpy(test["data"][0].reshape(3, 32, 32)))  # CHW layout


def test_tarball_with_parent_member_refused(tmp_path, monkeypatch, server, capsys):
    tarball, members = cifar_tarball(extra={"../evil": b"gotcha"})
    fake_cifar(monkeypatch, server, tarball, members)
    rc, err = run(capsys, "download", "cifar10", "--out", tmp_path / "raw" / "cifar10")
    assert rc == 2 and "cifar-10-python.tar.gz: refused to extract" in err and "../evil" in err
    assert files_in(tmp_path) == []  # nothing extracted, inside or out


def test_cifar_pickle_may_not_run_code(tmp_path, monkeypatch):
    class Boom:
        def __reduce__(self):
            return (print, ("pwned",))

    members = {name: pickle.dumps(Boom()) for name in data.DATASETS["cifar10"].files}
    for name, body in members.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(body)
    row = dataclasses.replace(data.DATASETS["cifar10"],
                              files={n: "md5:" + hashlib.md5(b).hexdigest() for n, b in members.items()})
    monkeypatch.setitem(data.DATASETS, "cifar10", row)
    with pytest.raises(UserError, match="data_batch_1: not a CIFAR pickle .*refusing builtins.print"):
        data.prepare("cifar10", tmp_path, tmp_path / "c.pt")


def test_svhn_reader(tmp_path, monkeypatch):
    from scipy.io import savemat

    rng = np.random.default_rng(2)
    files = {}
    for name, n in (("train_32x32.mat", 30), ("test_32x32.mat", 10)):
        savemat(tmp_path / name, {"X": rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8),
                                  "y": (np.arange(n) % 10 + 1).reshape(-1, 1).astype(np.uint8)})
        files[name] = "md5:" + hashlib.md5((tmp_path / name).read_bytes()).hexdigest()
    monkeypatch.setitem(data.DATASETS, "svhn", dataclasses.replace(data.DATASETS["svhn"], files=files))
    d = data.prepare("svhn", tmp_path, tmp_path / "s.pt", val_size=10)
    assert (d["train_x"].shape, d["test_x"].shape) == ((20, 3, 32, 32), (10, 3, 32, 32))
    assert sorted(d["test_y"].tolist()) == list(range(10))  # label 10 is the digit 0


def prepared_digits(tmp_path, capsys, *extra) -> Path:
    raw, out = tmp_path / "raw", tmp_path / f"digits{len(extra)}.pt"
    assert run(capsys, "download", "digits", "--out", raw)[0] == 0
    assert run(capsys, "prepare", "digits", "--raw", raw, "--out", out, *extra)[0] == 0
    return out


def test_digits_offline(tmp_path, monkeypatch, capsys):
    from sklearn.datasets import load_digits

    monkeypatch.delenv("NLA_DATA_DIR", raising=False)
    out = prepared_digits(tmp_path, capsys)
    assert (tmp_path / "raw" / "SOURCE").read_text() == "offline\n"  # not scikit-learn's path here
    d = data.load_prepared(out)
    assert [len(d[f"{s}_y"]) for s in ("train", "val", "test")] == [1257, 180, 360]
    assert d["train_x"].shape[1:] == (1, 8, 8) and d["classes"] == list("0123456789")
    for s in ("train", "val", "test"):  # stratified: every class in every split
        assert torch.bincount(d[f"{s}_y"], minlength=10).min() >= {"train": 120, "val": 17, "test": 35}[s]
    # The splits partition the 1,797 images exactly, scaled from 0..16 to 0..255.
    x, y = load_digits(return_X_y=True)
    want = sorted(map(tuple, np.c_[np.rint(x * 255 / 16), y].astype(int).tolist()))
    got = sorted(tuple(xi.flatten().tolist() + [int(yi)]) for s in ("train", "val", "test")
                 for xi, yi in zip(d[f"{s}_x"], d[f"{s}_y"], strict=True))
    assert got == want
    assert abs(d["mean"][0] - d["train_x"].double().mean().item() / 255) < 1e-12
    assert abs(d["std"][0] - d["train_x"].double().std(unbiased=False).item() / 255) < 1e-12
    again = prepared_digits(tmp_path / "again", capsys)
    assert out.read_bytes() == again.read_bytes()
    other = data.load_prepared(prepared_digits(tmp_path, capsys, "--seed", "1"))
    assert not torch.equal(other["test_y"], d["test_y"]) or not torch.equal(other["test_x"], d["test_x"])


def test_prepare_rejects_corrupt_raw_and_keeps_output(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NLA_DATA_DIR", raising=False)
    out = prepared_digits(tmp_path, capsys)
    before = out.read_bytes()
    raw_file = tmp_path / "raw" / "digits.csv.gz"
    raw_file.write_bytes(gzip.compress(gzip.decompress(raw_file.read_bytes()).replace(b"16", b"15", 1)))
    rc, err = run(capsys, "prepare", "digits", "--raw", tmp_path / "raw", "--out", out)
    assert rc == 2 and f"{raw_file}: checksum mismatch" in err and "download digits" in err
    assert out.read_bytes() == before
    (raw_file).unlink()
    rc, err = run(capsys, "prepare", "digits", "--raw", tmp_path / "raw", "--out", out)
    assert rc == 2 and f"{raw_file}: missing" in err


def test_split_sizes_checked(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NLA_DATA_DIR", raising=False)
    prepared_digits(tmp_path, capsys)
    rc, err = run(capsys, "prepare", "digits", "--raw", tmp_path / "raw", "--out", tmp_path / "x.pt",
                  "--val-size", 1000, "--train-size", 1000)
    assert rc == 2 and "digits has only 1437 images left" in err and not (tmp_path / "x.pt").exists()


@pytest.mark.skipif(not DEBIAN.is_dir(), reason=f"{DEBIAN} absent: apt-get install dataset-fashion-mnist")
def test_fashion_mnist_offline(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv("NLA_DATA_DIR", raising=False)
    raw = tmp_path / "raw"
    assert run(capsys, "download", "fashion_mnist", "--out", raw)[0] == 0
    assert (raw / "SOURCE").read_text() == "offline\n"
    outs = [tmp_path / "a.pt", tmp_path / "b.pt"]
    for out in outs:
        assert run(capsys, "prepare", "fashion_mnist", "--raw", raw, "--out", out)[0] == 0
    assert outs[0].read_bytes() == outs[1].read_bytes()
    d = data.load_prepared(outs[0])
    assert [d[f"{s}_x"].shape for s in ("train", "val", "test")] == [(55000, 1, 28, 28), (5000, 1, 28, 28),
                                                                    (10000, 1, 28, 28)]
    assert len(d["classes"]) == 10 and torch.bincount(d["val_y"]).tolist() == [500] * 10
    assert d["mean"][0] == pytest.approx(0.2860, abs=1e-3) and d["std"][0] == pytest.approx(0.3530, abs=1e-3)
    small = tmp_path / "small.pt"
    assert run(capsys, "prepare", "fashion_mnist", "--raw", raw, "--out", small, "--train-size", 1000,
               "--test-size", 500, "--seed", 3)[0] == 0
    s = data.load_prepared(small)
    assert torch.bincount(s["train_y"]).tolist() == [100] * 10 and torch.bincount(s["test_y"]).tolist() == [50] * 10


def test_load_prepared_rejects_bad_files(tmp_path):
    with pytest.raises(UserError, match=f"{tmp_path / 'none.pt'}: prepared dataset not found"):
        data.load_prepared(tmp_path / "none.pt")
    good = {f"{s}_{v}": torch.zeros(2, 1, 4, 4, dtype=torch.uint8) if v == "x" else torch.zeros(2, dtype=torch.int64)
            for s in ("train", "val", "test") for v in "xy"}
    good.update(name="t", classes=["a"], mean=[0.5], std=[0.2], seed=0)
    torch.save(good, tmp_path / "ok.pt")
    assert data.load_prepared(tmp_path / "ok.pt")["name"] == "t"
    torch.save({**good, "source": "offline /old/path"}, tmp_path / "old.pt")  # files from before: still load
    assert data.load_prepared(tmp_path / "old.pt")["name"] == "t"
    torch.save({**good, "train_y": fractions.Fraction(1, 3)}, tmp_path / "global.pt")
    for name, body, why in (
        ("junk.pt", b"not a zip", "not a torch.save zip archive"),
        ("random.pt", np.random.default_rng(0).bytes(4096), "not a torch.save zip archive"),
        ("empty.pt", b"", "the file is empty"),
        ("cut.pt", (tmp_path / "ok.pt").read_bytes()[:500], "not a torch.save zip archive"),
        ("global.pt", None, "it holds fractions.Fraction, which a prepared dataset never holds"),
    ):
        if body is not None:
            (tmp_path / name).write_bytes(body)
        with pytest.raises(UserError) as exc:
            data.load_prepared(tmp_path / name)
        assert str(exc.value).startswith(f"{tmp_path / name}: not a prepared dataset: {why}")
        assert "weights_only" not in str(exc.value)  # torch's advice to load it unsafely
    for change, why in (
        ({"val_y": None}, "val_y must be an int64"),
        ({"train_x": torch.zeros(2, 1, 4, 4)}, "train_x must be a uint8"),
        ({"test_y": torch.ones(2, dtype=torch.int64)}, "test_y has labels outside"),
        ({"std": [0.1, 0.2]}, "mean/std need one value per channel"),
    ):
        torch.save({**good, **change}, tmp_path / "bad.pt")
        with pytest.raises(UserError, match=f"{tmp_path / 'bad.pt'}: not a prepared dataset: {why}"):
            data.load_prepared(tmp_path / "bad.pt")
    torch.save({k: v for k, v in good.items() if k != "seed"}, tmp_path / "bad.pt")
    with pytest.raises(UserError, match="missing seed"):
        data.load_prepared(tmp_path / "bad.pt")
