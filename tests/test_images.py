"""Decoding a user's image files: every awkward kind gives the right pixels or a clear one-line refusal, memory
follows the output size, and caches follow the folder's content."""

import os
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imagegen.data import load_dataset
from imagegen.data.folder import folder_digest
from imagegen.errors import ImagegenError
from imagegen.metrics.evaluator import evaluator_dir
from imagegen.pixels import fit_image, read_images

WHITE, RED = (255, 255, 255), (255, 0, 0)


def _halves(mode, left, right, side=16):
    """A side x side image of `mode`: the left half one value, the right half another."""
    im = Image.new(mode, (side, side), left)
    im.paste(Image.new(mode, (side // 2, side), right), (side // 2, 0))
    return im


def _gray16(path):
    a = np.full((16, 16), 32768, np.uint16)
    a[:, 8:] = 65535
    Image.fromarray(a).save(path)  # a 16-bit greyscale PNG (mode I;16)


def _palette(path, transparent=False):
    im = _halves("P", 0, 1)
    im.putpalette([0, 128, 255, 255, 255, 0])
    im.save(path, **({"transparency": 1} if transparent else {}))


def _rgb_keyed(path):
    _halves("RGB", RED, (0, 0, 0)).save(path, transparency=(0, 0, 0))  # black marked transparent (tRNS)


# name -> (write one file, the channels a folder of these decodes to, (left pixel, right pixel), tolerance)
KINDS = {
    "gray16.png": (_gray16, 1, ((128,), (255,)), 0),
    "rgba.png": (lambda p: _halves("RGBA", (*RED, 255), (0, 0, 0, 0)).save(p), 3, (RED, WHITE), 0),
    "la.png": (lambda p: _halves("LA", (0, 255), (0, 0)).save(p), 1, ((0,), (255,)), 0),
    "la-half.png": (lambda p: _halves("LA", (0, 128), (100, 255)).save(p), 1, ((127,), (100,)), 1),
    "palette.png": (_palette, 3, ((0, 128, 255), (255, 255, 0)), 0),
    "palette-transparent.png": (lambda p: _palette(p, True), 3, ((0, 128, 255), WHITE), 0),
    "rgb-keyed.png": (_rgb_keyed, 3, (RED, WHITE), 0),
    "bilevel.png": (lambda p: _halves("1", 0, 1).save(p), 1, ((0,), (255,)), 0),
    "cmyk.jpg": (lambda p: Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(p, quality=95), 3, (RED, RED), 8),
}


def _check_halves(images, expected, tol):
    """Every image's left quarter holds expected[0] and its right quarter expected[1], within tol."""
    left, right = (np.array(v, np.int16)[None, :, None, None] for v in expected)
    assert np.abs(images[:, :, :, :4].astype(np.int16) - left).max() <= tol
    assert np.abs(images[:, :, :, -4:].astype(np.int16) - right).max() <= tol


@pytest.mark.parametrize("name", KINDS)
def test_awkward_kinds_decode_right_in_a_folder_and_from_files(tmp_path, name):
    write, channels, expected, tol = KINDS[name]
    root = tmp_path / "kind"
    root.mkdir()
    for i in range(2):
        write(root / f"{i}-{name}")
    files = sorted(root.iterdir())
    from_files = read_images(files, 16, channels)
    assert from_files.shape == (2, channels, 16, 16)
    _check_halves(from_files, expected, tol)
    ds = [load_dataset(f"folder:{root}", split, size=16) for split in ("train", "test")]
    images = np.concatenate([d.images for d in ds])
    assert images.shape == (2, channels, 16, 16)  # the folder decided the same number of channels
    _check_halves(images, expected, tol)


def test_16bit_is_scaled_not_clipped_when_resized(tmp_path):
    Image.fromarray(np.full((30, 40), 32768, np.uint16)).save(tmp_path / "a.png")
    assert Image.open(tmp_path / "a.png").mode == "I;16"
    out = read_images([tmp_path / "a.png"], 8, 3)
    assert out.shape == (1, 3, 8, 8) and out.min() >= 127 and out.max() <= 129  # was solid 255
    mode_i = Image.fromarray(np.full((8, 8), 16384, np.int32))  # mode I, as some 16-bit files decode
    assert mode_i.mode == "I" and (fit_image(mode_i, 8, 1) == 64).all()


def test_float_images_are_refused_not_guessed(tmp_path):
    Image.new("F", (8, 8), 0.5).save(tmp_path / "f.tif")
    with pytest.raises(ImagegenError, match=r"f.tif: 32-bit float pixels \(mode F\) are not supported"):
        read_images([tmp_path / "f.tif"], 8, 1)


def test_exif_orientation_is_applied(tmp_path):
    stored = _halves("RGB", RED, (0, 0, 255), side=64).crop((0, 0, 64, 32))  # 64 wide: red left, blue right
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display": red ends on top
    stored.save(tmp_path / "phone.jpg", exif=exif, quality=95)
    out = read_images([tmp_path / "phone.jpg"], 16, 3).astype(int)[0]  # (3, 16, 16)
    assert (np.abs(out[:, 1, :] - np.array(RED)[:, None]) < 16).all()
    assert (np.abs(out[:, -2, :] - np.array([0, 0, 255])[:, None]) < 16).all()


def _unreadable_files(folder):
    """Four good PNGs, then an empty file, junk, and a truncated JPEG and PNG."""
    for i in range(4):
        Image.new("RGB", (20, 20), (10 * i, 0, 0)).save(folder / f"good{i}.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "junk.jpg").write_bytes(b"<html>not found</html>")
    Image.effect_noise((64, 64), 50).convert("RGB").save(folder / "whole.jpg")
    (folder / "cut.jpg").write_bytes((folder / "whole.jpg").read_bytes()[:600])
    Image.effect_noise((64, 64), 50).save(folder / "whole.png")
    (folder / "cut.png").write_bytes((folder / "whole.png").read_bytes()[:300])
    (folder / "whole.jpg").unlink()
    (folder / "whole.png").unlink()


def _check_refused(files, reasons):
    """read_images refuses each file in one line that names it once and gives the reason."""
    for f, reason in zip(files, reasons, strict=True):
        with pytest.raises(ImagegenError) as e:
            read_images([f], 8, 3)
        assert str(e.value).startswith(f"cannot read image {f}: {reason}")
        assert "\n" not in str(e.value) and str(e.value).count(str(f)) == 1


def test_unreadable_files_are_skipped_by_name_and_reason(tmp_path):
    _unreadable_files(tmp_path)
    with pytest.warns(UserWarning, match="could not be read and were skipped") as caught:
        ds = [load_dataset(f"folder:{tmp_path}", split, size=8) for split in ("train", "test")]
    assert sum(len(d) for d in ds) == 4
    msg = str(caught[0].message)
    cut = "truncated: the file ends before the image does"
    reasons = {"cut.jpg": cut, "cut.png": cut,
               "empty.png": "empty file", "junk.jpg": "not an image file Pillow can read"}
    assert msg == "4 of 8 image files could not be read and were skipped: " + \
        ", ".join(f"{name} ({why})" for name, why in reasons.items())
    _check_refused([tmp_path / name for name in reasons], reasons.values())


def test_decompression_bombs_are_refused_not_crashed_on(tmp_path, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)  # so that a bomb stays small
    Image.new("L", (40, 40)).save(tmp_path / "warns.png")  # 1600 pixels: Pillow warns
    Image.new("L", (50, 50)).save(tmp_path / "raises.png")  # 2500, over twice the limit: Pillow raises
    for i in range(2):
        Image.new("L", (30, 30), 200).save(tmp_path / f"ok{i}.png")
    with pytest.warns(UserWarning, match=r"^2 of 4 .*: raises.png \(too large: over 1,000 pixels, Pillow's "
                                         r"limit against decompression bombs\), warns.png \(too large"):
        ds = load_dataset(f"folder:{tmp_path}", "train", size=8)
    assert (ds.images == 200).all()
    _check_refused([tmp_path / "warns.png", tmp_path / "raises.png"], ["too large: over 1,000 pixels"] * 2)


def test_strict_is_honoured_from_a_cache_of_a_lenient_run(image_folder, monkeypatch):
    (image_folder / "red" / "broken.png").write_bytes(b"\x89PNG not really")
    with pytest.warns(UserWarning, match="broken.png"):
        load_dataset(f"folder:{image_folder}", "train", size=8)

    def no_decoding(*a, **k):
        raise AssertionError("decoded again")

    monkeypatch.setattr("imagegen.pixels.Image.open", no_decoding)  # what follows comes from the cache
    with pytest.raises(ImagegenError, match=r"^1 of 13 image files could not be read \(--strict\): "
                                            r"red/broken.png \(not an image file Pillow can read\)$"):
        load_dataset(f"folder:{image_folder}", "train", size=8, strict=True)
    with pytest.warns(UserWarning, match="were skipped: red/broken.png"):
        load_dataset(f"folder:{image_folder}", "test", size=8)


def test_strict_from_the_cli_is_one_line(image_folder, capsys):
    from imagegen.cli import main

    (image_folder / "red" / "broken.png").write_bytes(b"")
    with pytest.warns(UserWarning, match="broken.png"):
        load_dataset(f"folder:{image_folder}", "train", size=32)
    assert main(["data", "--dataset", f"folder:{image_folder}", "--strict"]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "red/broken.png (empty file)" in err and "Traceback" not in err


def _rss_peak_mb(fn):
    """(fn(), peak resident memory in MB above the start while it ran): Linux's peak counter, reset first."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pytest.skip("needs Linux's /proc/self/clear_refs to reset the peak memory counter")

    def kb(field):
        status = Path("/proc/self/status").read_text()
        return int(status.split(field + ":")[1].split()[0])

    start = kb("VmRSS")
    result = fn()
    return result, (kb("VmHWM") - start) / 1024


def test_big_jpegs_decode_in_memory_that_follows_the_output_size(tmp_path):
    for i in range(6):
        _halves("RGB", (40 * i, 0, 0), (0, 0, 200), side=2000).save(tmp_path / f"{i}.jpg", quality=90)
    ds, peak = _rss_peak_mb(lambda: load_dataset(f"folder:{tmp_path}", "train", size=32))
    # holding the six decoded images takes 6 x 12 MB = 72 MB (the decoder that did so peaked at 124 MB)
    assert peak < 20, f"decoding six 2000x2000 JPEGs to 32x32 took {peak:.0f} MB"
    assert ds.images.shape == (5, 3, 32, 32)
    assert (np.abs(ds.images[:, :, :, -4:].astype(int) - np.array([0, 0, 200])[:, None, None]) < 8).all()


def test_evaluator_dir_follows_the_folder_content(image_folder):
    name = f"folder:{image_folder}"
    first = evaluator_dir(name)
    assert first == evaluator_dir(name) and first.name.startswith("folder-pics-")
    assert evaluator_dir(name, size=16) != first and evaluator_dir(name, channels=1) != first
    assert evaluator_dir("mnist").name == "mnist"
    time.sleep(0.01)
    Image.new("RGB", (40, 30), (0, 255, 0)).save(image_folder / "red" / "0.png")
    changed = evaluator_dir(name)
    assert changed != first and changed == evaluator_dir(name)
    assert changed.name.endswith(folder_digest(image_folder)[:16])
    os.symlink("loop", image_folder.parent / "loop")
    with pytest.raises(ImagegenError, match="is a symbolic link to nothing"):
        evaluator_dir(f"folder:{image_folder.parent / 'loop'}")


def _warnings_of(fn):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = fn()
    return result, [str(w.message) for w in caught]


def test_folder_edges_are_named_not_silent(image_folder):
    (image_folder / "empty").mkdir()
    (image_folder / "notes.txt").write_text("not an image")
    (image_folder / "loose.png").write_bytes((image_folder / "red" / "0.png").read_bytes())
    (image_folder / "red" / "more").mkdir()
    (image_folder / ".DS_Store").write_bytes(b"\0")  # hidden: passed over without a word
    (image_folder / "red" / "._0.png").write_bytes(b"\0")  # a macOS resource fork
    os.symlink("loop.png", image_folder / "red" / "loop.png")
    os.symlink("nowhere.png", image_folder / "blue" / "gone.png")
    os.symlink("cycle", image_folder / "cycle")
    ds, msgs = _warnings_of(lambda: load_dataset(f"folder:{image_folder}", "train", size=8))
    assert ds.classes == ("blue", "red")
    assert any(m.startswith("2 file(s) without an image extension") and m.endswith(": cycle, notes.txt")
               for m in msgs)
    assert "1 image(s) directly in" in "".join(msgs) and "class sub-folders: loose.png" in "".join(msgs)
    assert any(m.endswith("hold no images and are not classes: empty") for m in msgs)
    assert any(m.endswith("folder(s) inside a class folder are not read: more") for m in msgs)
    skipped = next(m for m in msgs if "could not be read" in m)
    assert "blue/gone.png (does not exist (broken link))" in skipped
    assert "red/loop.png (Too many levels of symbolic links)" in skipped
    assert not any("DS_Store" in m or "._0" in m for m in msgs) and all("\n" not in m for m in msgs)
    os.symlink("root-loop", image_folder.parent / "root-loop")
    with pytest.raises(ImagegenError, match="is a symbolic link to nothing"):
        load_dataset(f"folder:{image_folder.parent / 'root-loop'}")


def test_read_images_needs_files():
    with pytest.raises(ImagegenError, match="no image files given"):
        read_images([], 8, 1)
