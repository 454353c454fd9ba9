import hashlib

import numpy as np
import pytest

from imagegen.data import load_dataset
from imagegen.data.download import fetch
from imagegen.data.mnist import SOURCES
from imagegen.errors import ImagegenError

from .conftest import Handler, make_idx_dir


def sha(b):
    return hashlib.sha256(b).hexdigest()


def test_good_download(server, tmp_path):
    Handler.files = {"a.bin": b"x" * 100_000}
    dest = fetch([f"{server}/ok/a.bin"], tmp_path / "a.bin", sha(b"x" * 100_000), show_progress=False)
    assert dest.read_bytes() == b"x" * 100_000 and list(tmp_path.iterdir()) == [dest]


def test_truncated_download_leaves_nothing(server, tmp_path):
    Handler.files = {"a.bin": b"x" * 5000}
    with pytest.raises(ImagegenError, match="a.bin"):
        fetch([f"{server}/short/a.bin"], tmp_path / "a.bin", sha(b"x" * 5000), timeout=5, show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_removes_file(server, tmp_path):
    Handler.files = {"a.bin": b"tampered"}
    with pytest.raises(ImagegenError, match="checksum mismatch.*file removed"):
        fetch([f"{server}/ok/a.bin"], tmp_path / "a.bin", sha(b"original"), show_progress=False)
    assert list(tmp_path.iterdir()) == []


def test_server_error_then_next_mirror(server, tmp_path):
    Handler.files = {"a.bin": b"data"}
    with pytest.raises(ImagegenError, match="500"):
        fetch([f"{server}/error/a.bin"], tmp_path / "a.bin", sha(b"data"), show_progress=False)
    dest = fetch([f"{server}/error/a.bin", f"{server}/ok/a.bin"], tmp_path / "a.bin", sha(b"data"),
                 show_progress=False)
    assert dest.read_bytes() == b"data"


def test_dataset_download_end_to_end(server, tmp_path, monkeypatch):
    src = make_idx_dir(tmp_path / "src")
    Handler.files = {p.name: p.read_bytes() for p in src.iterdir()}
    monkeypatch.setitem(SOURCES["mnist"], "sha256", {k: sha(v) for k, v in Handler.files.items()})
    monkeypatch.setenv("IMAGEGEN_MIRROR", f"{server}/ok/")
    with pytest.raises(ImagegenError, match="not found"):
        load_dataset("mnist", "train")
    ds = load_dataset("mnist", "train", download=True, show_progress=False)
    assert ds.images.shape == (60, 1, 28, 28) and np.bincount(ds.labels).tolist() == [6] * 10
    Handler.files = {}  # now served from the cache, no network
    assert len(load_dataset("mnist", "test")) == 20
