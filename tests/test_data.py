import gzip
import time

import numpy as np
import pytest
from PIL import Image

from imagegen.data import load_dataset, stratified_split
from imagegen.data.idx import read_idx, write_idx
from imagegen.data.mnist import SOURCES
from imagegen.errors import ImagegenError


def test_idx_round_trip(tmp_path):
    a = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    assert np.array_equal(read_idx(write_idx(a, tmp_path / "a.gz")), a)


def test_truncated_idx_is_a_clear_error(tmp_path):
    path = write_idx(np.zeros((5, 28, 28), np.uint8), tmp_path / "x-images-idx3-ubyte.gz")
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw[:-100]))
    with pytest.raises(ImagegenError, match="truncated IDX file"):
        read_idx(path)
    path.write_bytes(path.read_bytes()[:40])  # a cut gzip stream
    with pytest.raises(ImagegenError, match="cannot read IDX data"):
        read_idx(path)


def test_not_an_idx_file(tmp_path):
    (tmp_path / "f").write_bytes(b"<html>not found</html>")
    with pytest.raises(ImagegenError, match="not an unsigned-byte IDX file"):
        read_idx(tmp_path / "f")


def test_fashion_mnist_from_data_dir(idx_dir, monkeypatch):
    monkeypatch.setitem(SOURCES["fashion-mnist"], "system_dirs", [])
    ds = load_dataset("fashion-mnist", "train", data_dir=str(idx_dir))
    assert ds.images.dtype == np.uint8 and ds.images.shape == (60, 1, 28, 28)
    assert ds.labels.dtype == np.int64 and ds.classes[0] == "T-shirt/top"
    assert len(load_dataset("fashion-mnist", "test", data_dir=str(idx_dir))) == 20


def test_env_var_is_a_data_dir(idx_dir, monkeypatch):
    monkeypatch.setitem(SOURCES["mnist"], "system_dirs", [])
    monkeypatch.setenv("IMAGEGEN_DATA", str(idx_dir))
    assert len(load_dataset("mnist", "train")) == 60


def test_missing_dataset_lists_three_ways(monkeypatch, tmp_path):
    monkeypatch.setitem(SOURCES["fashion-mnist"], "system_dirs", [str(tmp_path / "nothing")])
    with pytest.raises(ImagegenError) as e:
        load_dataset("fashion-mnist", "train")
    msg = str(e.value)
    assert "--data-dir" in msg and "apt-get install dataset-fashion-mnist" in msg and "--download" in msg


def test_unknown_dataset_and_split():
    with pytest.raises(ImagegenError, match="unknown dataset 'cifar'.*fashion-mnist"):
        load_dataset("cifar")
    with pytest.raises(ImagegenError, match="unknown split"):
        load_dataset("digits", "valid")


def test_stratified_split_is_deterministic_and_disjoint():
    labels = np.repeat(np.arange(5), [10, 20, 30, 2, 1])
    train, test = stratified_split(labels, 0.2, seed=3)
    assert np.array_equal(test, stratified_split(labels, 0.2, seed=3)[1])
    assert not set(train) & set(test) and len(train) + len(test) == len(labels)
    assert [int((labels[test] == c).sum()) for c in range(5)] == [2, 4, 6, 1, 0]


def test_mnist_5k_is_real_and_stratified():
    train, test = load_dataset("mnist-5k", "train"), load_dataset("mnist-5k", "test")
    assert (len(train), len(test)) == (4000, 1000)
    assert np.bincount(test.labels).tolist() == [100] * 10
    assert train.images.shape[1:] == (1, 28, 28) and train.images.max() == 255
    # no image is in both splits
    tr = {im.tobytes() for im in train.images}
    assert sum(im.tobytes() in tr for im in test.images) < 5


def test_digits():
    ds = load_dataset("digits", "train")
    assert ds.images.shape[1:] == (1, 8, 8) and ds.images.max() == 255 and len(ds.classes) == 10


def test_folder_classes_resize_and_split(image_folder):
    train = load_dataset(f"folder:{image_folder}", "train", size=16)
    test = load_dataset(f"folder:{image_folder}", "test", size=16)
    assert train.classes == ("blue", "red")
    assert train.images.shape[1:] == (3, 16, 16) and len(train) + len(test) == 12
    red = train.images[train.labels == 1]
    assert (red[:, 0] == 255).all() and (red[:, 2] == 0).all()


def test_folder_grayscale_single_class(tmp_path):
    for i in range(3):
        Image.new("L", (20, 20), 30 * i).save(tmp_path / f"{i}.png")
    ds = load_dataset(f"folder:{tmp_path}", "train", size=8)
    assert ds.images.shape[1:] == (1, 8, 8) and ds.classes == (tmp_path.name,)


def test_folder_corrupt_files_warn_or_fail(image_folder):
    (image_folder / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match="1 of 13 image files could not be read.*broken.png"):
        ds = load_dataset(f"folder:{image_folder}", "train", size=8)
    with pytest.warns(UserWarning, match="1 of 13 .*broken.png"):  # from the cache too: nothing silent
        assert len(ds) + len(load_dataset(f"folder:{image_folder}", "test", size=8)) == 12
    (image_folder / "red" / "broken2.png").write_bytes(b"junk")
    with pytest.raises(ImagegenError, match="--strict"):
        load_dataset(f"folder:{image_folder}", "train", size=8, strict=True)


def test_folder_errors(tmp_path):
    with pytest.raises(ImagegenError, match="does not exist"):
        load_dataset(f"folder:{tmp_path / 'nope'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ImagegenError, match="holds no images"):
        load_dataset(f"folder:{tmp_path / 'empty'}")
    (tmp_path / "one").mkdir()
    Image.new("L", (8, 8)).save(tmp_path / "one" / "a.png")
    with pytest.raises(ImagegenError, match="at least 2"):
        load_dataset(f"folder:{tmp_path / 'one'}")


def test_folder_cache_skips_decoding_until_files_change(image_folder, monkeypatch):
    first = load_dataset(f"folder:{image_folder}", "train", size=8)

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr("imagegen.pixels.Image.open", no_decoding)
    again = load_dataset(f"folder:{image_folder}", "train", size=8)
    assert np.array_equal(first.images, again.images)
    monkeypatch.undo()
    time.sleep(0.01)
    Image.new("RGB", (40, 30), (0, 255, 0)).save(image_folder / "red" / "0.png")
    changed = load_dataset(f"folder:{image_folder}", "train", size=8)
    assert (changed.images[:, 1] == 255).any()
