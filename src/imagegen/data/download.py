"""Downloads with SHA-256 verification that never leave a partial file where data is expected, and the folders
where a user's own copy of a dataset is looked for first.

Written here rather than taken from a library because the needs are small and specific: try mirrors in order,
stream to `NAME.part` beside the target, check length and checksum, then rename; on any failure remove the
partial file and say what went wrong with each mirror.
"""

from __future__ import annotations

import hashlib
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..errors import ImagegenError
from ..utils import progress

CHUNK = 1 << 16


def user_dirs(name: str, data_dir: str | None) -> list[Path]:
    """--data-dir (else $IMAGEGEN_DATA) and its sub-folder named after the dataset; none when neither is given."""
    user = data_dir or os.environ.get("IMAGEGEN_DATA")
    return [Path(user), Path(user) / name] if user else []


def fetch(urls: list[str], dest: Path, sha256: str, *, timeout: float = 60.0, show_progress: bool = True) -> Path:
    """Download the first mirror that yields a file with the right checksum into `dest`."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    failures = []
    for url in urls:
        try:
            _fetch_one(url, dest, sha256, timeout, show_progress)
            return dest
        except urllib.error.HTTPError as e:
            failures.append(f"{url}: HTTP {e.code} {e.reason}")
        except (urllib.error.URLError, OSError, ValueError) as e:
            failures.append(f"{url}: {getattr(e, 'reason', None) or e}")
    raise ImagegenError(f"could not download {dest.name}: " + "; ".join(failures))


def _fetch_one(url: str, dest: Path, sha256: str, timeout: float, show_progress: bool) -> None:
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.sha256()
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            received = 0
            with progress(total=total, unit="B", unit_scale=True, desc=dest.name, enabled=show_progress) as bar:
                while chunk := response.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    received += len(chunk)
                    bar.update(len(chunk))
        if total is not None and received != total:
            raise ValueError(f"truncated download: got {received} of {total} bytes")
        if digest.hexdigest() != sha256:
            raise ValueError(f"checksum mismatch: SHA-256 {digest.hexdigest()}, expected {sha256}; file removed")
        os.replace(part, dest)
    finally:
        part.unlink(missing_ok=True)
