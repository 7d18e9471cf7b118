"""The dataset table: shapes, classes, default splits, raw files and where to get them.

Torch-free on purpose: the study plan (and so the Snakefile) reads shapes and class counts
from here, and ``data`` (download, prepare) reads the rest. One row per dataset; adding a
dataset starts here (docs/extending.md).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path


def _sklearn_data() -> str:
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it (slow)
    return str(Path(spec.origin).parent / "datasets" / "data") if spec else "(scikit-learn missing)"


@dataclass(frozen=True)
class Dataset:
    """One row of the table. ``files`` maps each raw file (relative to the raw dir) to a check.

    A check is ``"sha256:HEX"`` of the *decompressed* payload (the same whichever source
    recompressed it) or ``"md5:HEX"`` of the file as served, where only that is published.
    """

    shape: tuple[int, int, int]
    reader: str  # key of READERS
    files: dict[str, str]
    classes: tuple[str, ...] = ()  # empty: read from the archive's meta file
    urls: tuple[str, ...] = ()  # mirrors, tried in order; a file's URL is mirror + name
    archive: tuple[str, str] | None = None  # (name, md5): fetched, checked, extracted, dropped
    offline: tuple[str, str] | None = None  # (directory, how to get it when it is missing)
    val_size: int = 5000  # carved from the training set
    test_size: int = 0  # 0: the official test set; else carved from the one pool (digits)
    num_classes: int = 10
    # (images of the training set, of the official test set; 0: none, the test set is carved from the
    # one pool): validate-params refuses splits larger than these. None: unknown, not checked.
    images: tuple[int, int] | None = None


DIGITS = tuple("0123456789")
FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
           "Ankle boot")

DATASETS: dict[str, Dataset] = {
    # scikit-learn's bundled copy of the UCI optdigits test set (1,797 images, values 0..16).
    # sha256 of the decompressed csv, computed here from scikit-learn 1.9.1's digits.csv.gz.
    "digits": Dataset(
        shape=(1, 8, 8), reader="digits", classes=DIGITS,
        files={"digits.csv.gz": "sha256:6ebb3d2fee246a4e99363262ddf8a00a3c41bee6014c373ed9d9216ba7f651b8"},
        offline=(_sklearn_data(), "pip install scikit-learn"), val_size=180, test_size=360, images=(1797, 0),
    ),
    # sha256s of the decompressed idx files, as given in issue 4 and checked here against
    # both Debian's recompressed .gz files; upstream's .gz md5s (torchvision's list) differ
    # from Debian's, so they are not used.
    "fashion_mnist": Dataset(
        shape=(1, 28, 28), reader="idx", classes=FASHION,
        files={
            "train-images-idx3-ubyte.gz": "sha256:c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            "train-labels-idx1-ubyte.gz": "sha256:bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            "t10k-images-idx3-ubyte.gz": "sha256:5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            "t10k-labels-idx1-ubyte.gz": "sha256:0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
        },
        urls=("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
        offline=("/usr/share/datasets/fashion-mnist", "apt-get install dataset-fashion-mnist"), images=(60000, 10000),
    ),
    # The rest have no offline copy, and their payload sha256s cannot be computed without the
    # data: they carry the md5s torchvision 0.29 publishes (datasets/mnist.py, cifar.py, svhn.py).
    # MNIST: md5 of the upstream .gz files.
    "mnist": Dataset(
        shape=(1, 28, 28), reader="idx", classes=DIGITS,
        files={
            "train-images-idx3-ubyte.gz": "md5:f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "md5:d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "md5:9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "md5:ec29112dd5afa0611ce80d1b7f02629c",
        },
        urls=("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
        images=(60000, 10000),
    ),
    # CIFAR: md5 of the .tar.gz, then md5 of every extracted (decompressed) member.
    "cifar10": Dataset(
        shape=(3, 32, 32), reader="cifar",
        files={
            "cifar-10-batches-py/data_batch_1": "md5:c99cafc152244af753f735de768cd75f",
            "cifar-10-batches-py/data_batch_2": "md5:d4bba439e000b95fd0a9bffe97cbabec",
            "cifar-10-batches-py/data_batch_3": "md5:54ebc095f3ab1f0389bbae665268c751",
            "cifar-10-batches-py/data_batch_4": "md5:634d18415352ddfa80567beed471001a",
            "cifar-10-batches-py/data_batch_5": "md5:482c414d41f54cd18b22e5b47cb7c3cb",
            "cifar-10-batches-py/test_batch": "md5:40351d587109b95175f43aff81a1287e",
            "cifar-10-batches-py/batches.meta": "md5:5ff9c542aee3614f3951f8cda6e48888",
        },
        urls=("https://www.cs.toronto.edu/~kriz/",),
        archive=("cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a"), images=(50000, 10000),
    ),
    "cifar100": Dataset(
        shape=(3, 32, 32), reader="cifar",
        files={
            "cifar-100-python/train": "md5:16019d7e3df5f24257cddd939b257f8d",
            "cifar-100-python/test": "md5:f0ef6b0ae62326f3e7ffdfab6717acfc",
            "cifar-100-python/meta": "md5:7973b15100ade9c7d40fb424638fde48",
        },
        urls=("https://www.cs.toronto.edu/~kriz/",),
        archive=("cifar-100-python.tar.gz", "eb9058c3a382ffc7106e4002c42a8d85"), num_classes=100,
        images=(50000, 10000),
    ),
    # SVHN: md5 of the .mat files (uncompressed; the 'extra' split is not used).
    "svhn": Dataset(
        shape=(3, 32, 32), reader="svhn", classes=DIGITS,
        files={
            "train_32x32.mat": "md5:e26dedcc434d2e4c54c9b2d4a06d8373",
            "test_32x32.mat": "md5:eb5a983be6a315427106f1b164d9cef3",
        },
        urls=("http://ufldl.stanford.edu/housenumbers/",), images=(73257, 26032),
    ),
}
