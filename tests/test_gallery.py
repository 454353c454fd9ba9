"""Galleries say what they show: a class name beside each row, and under the grid the seed and the sampler."""

import numpy as np
from PIL import Image

from imagegen.pixels import class_grid, class_rows, grid
from imagegen.sampling import drawn_with
from imagegen.train import loop

from .test_train import tiny_config


def _images(n, value=0, size=4):
    return np.full((n, 1, size, size), value, np.uint8)


def test_class_rows_give_one_row_per_class_in_class_order_with_blank_tiles_for_short_rows():
    images = np.arange(5, dtype=np.uint8)[:, None, None, None].repeat(4, 2).repeat(4, 3)  # image i is all i
    rows, names = class_rows(images, np.array([2, 0, 2, 0, 2]), ["a", "b", "c"], per_row=2)
    assert names == ["a", "c"]  # the classes present, in class order; b has no image
    assert [int(t[0, 0, 0]) for t in rows] == [1, 3, 0, 2]  # class 0: images 1 and 3; class 2: the first two
    rows, names = class_rows(images, np.array([1, 1, 1, 1, 0]), ["a", "b"], per_row=3)
    assert names == ["a", "b"] and [int(t[0, 0, 0]) for t in rows] == [4, 255, 255, 0, 1, 2]  # blanks are white


def _dark_rows(picture: np.ndarray, x0: int, x1: int) -> np.ndarray:
    dark = picture[:, x0:x1] < 128
    return np.flatnonzero(dark.reshape(len(dark), -1).any(axis=1))


def test_a_class_grid_names_each_row_and_says_how_it_was_drawn():
    images = _images(30, value=255)  # white tiles: any dark pixel is text
    plain = grid(images, nrow=10, scale=2)
    named = np.asarray(class_grid(images, ["shirt", "bag", "ankle boot"], nrow=10, footer="seed 0; flow"))
    margin = named.shape[1] - plain.shape[1]
    assert margin > 20 and named.shape[0] == plain.shape[0] + 16  # a margin for the names, a line below
    rows = _dark_rows(named[: plain.shape[0]], 0, margin)
    row_h = plain.shape[0] // 3
    assert {int(y) // row_h for y in rows} == {0, 1, 2}  # text beside every row
    assert len(_dark_rows(named[plain.shape[0]:], margin, named.shape[1])) > 0  # the footer is drawn
    bare = np.asarray(class_grid(images, ["a", "b", "c"], nrow=10))
    assert bare.shape[0] == plain.shape[0] and not (bare[:, bare.shape[1] - plain.shape[1]:] < 128).any()


def test_a_class_grid_of_grayscale_images_is_grayscale_and_of_colour_images_colour():
    gray = _images(10, value=40)
    picture = class_grid(gray, ["shirt"], nrow=10, footer="seed 0")
    assert picture.mode == "L"  # a third of the bytes of RGB to encode, the same look
    assert (np.asarray(picture)[4:12, -12:-4] == 40).all()  # the last tile's pixels, at scale 2 inside the padding
    colour = np.zeros((10, 3, 4, 4), np.uint8)
    colour[:, 0] = 200  # red
    picture = class_grid(colour, ["apple"], nrow=10, footer="seed 0")
    assert picture.mode == "RGB" and tuple(np.asarray(picture)[6, -6]) == (200, 0, 0)


def test_the_line_under_a_gallery_names_the_seed_and_the_sampler():
    flow = {"sampler": "dpmpp-2m", "steps": 8, "guidance": 1.4}
    assert drawn_with("flow", flow, 3) == "seed 3; flow, dpmpp-2m 8 steps, guidance 1.4"
    assert drawn_with("edm", {**flow, "guidance": 1.0}, 0) == "seed 0; edm, dpmpp-2m 8 steps, no guidance"
    assert drawn_with("gan", {}, 0) == "seed 0; gan, one network call per image"


def test_a_training_runs_grid_names_its_classes(tmp_path):
    loop.train(tiny_config(images=32), tmp_path / "run", show_progress=False, log=lambda s: None)
    picture = np.asarray(Image.open(tmp_path / "run" / "grid.png").convert("L"))[..., None]
    tile = 8 * 2 + 2 * 2  # 8x8 digits at scale 2, with padding
    margin = picture.shape[1] - 10 * tile - 2 * 2
    assert margin > 8
    rows = _dark_rows(picture, 0, margin)
    assert {int(y) // tile for y in rows if y < 10 * tile} == set(range(10))  # a name beside each of the 10 rows
