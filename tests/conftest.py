import http.server
import os
import threading
import typing

import numpy as np
import pytest
from PIL import Image

from imagegen.data.idx import write_idx

if os.environ.get("PYTEST_XDIST_WORKER"):  # `pytest -n 2`: the workers share the cores, one thread each (children too)
    import torch

    os.environ.setdefault("OMP_NUM_THREADS", "1")
    torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _isolated(tmp_path_factory, monkeypatch):
    """Every test gets its own cache and no progress bars; nothing leaks into ~/.cache."""
    monkeypatch.setenv("IMAGEGEN_CACHE", str(tmp_path_factory.mktemp("cache")))
    monkeypatch.setenv("IMAGEGEN_PROGRESS", "0")
    monkeypatch.delenv("IMAGEGEN_DATA", raising=False)
    monkeypatch.delenv("IMAGEGEN_MIRROR", raising=False)


def make_idx_dir(path, n_train=60, n_test=20, side=28, seed=0):
    """Four IDX files of a fake 10-class dataset where class c is a bright square at a class-specific row."""
    rng = np.random.default_rng(seed)
    path.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = rng.integers(0, 40, (n, side, side)).astype(np.uint8)
        for i, c in enumerate(labels):
            images[i, 2 * c + 2 : 2 * c + 6, 4:24] = 250
        write_idx(images, path / f"{prefix}-images-idx3-ubyte.gz")
        write_idx(labels.astype(np.uint8), path / f"{prefix}-labels-idx1-ubyte.gz")
    return path


@pytest.fixture
def idx_dir(tmp_path):
    return make_idx_dir(tmp_path / "idx")


@pytest.fixture
def image_folder(tmp_path):
    """Two classes of RGB images of different sizes: red squares and blue squares."""
    root = tmp_path / "pics"
    for name, color in (("blue", (0, 0, 255)), ("red", (255, 0, 0))):
        (root / name).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (40 + i, 30), color).save(root / name / f"{i}.png")
    return root


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves `files` by the last part of the path; /error/ paths fail with 500, /short/ ones promise 1000 bytes
    more than they send."""

    files: typing.ClassVar[dict] = {}  # what the test serves, set before the server starts
    log_message = lambda *a: None  # noqa: E731

    def do_GET(self):
        name = self.path.rsplit("/", 1)[-1]
        if self.path.startswith("/error/"):
            self.send_error(500)
            return
        if name not in self.files:
            self.send_error(404)
            return
        body = self.files[name]
        self.send_response(200)
        self.send_header("Content-Length", str(len(body) + (1000 if self.path.startswith("/short/") else 0)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture
def server():
    """A local HTTP server (127.0.0.1, a free port) serving `Handler.files`; yields its base URL."""
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()
