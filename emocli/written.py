"""Check a written file before the rename that publishes it.

On a full device `torch.save` raises, but safetensors and PIL can return normally and leave a short file
behind; renamed into place it would look like a complete checkpoint, export or sample. Every writer that
publishes through a rename (checkpoints, `final/` and `best/`, samples and grids, prepared data, JSON
sidecars, caches) calls `check_file` or `check_tree` on the staged copy first, or `publish` to do both.

The checks are cheap: the size a format declares against the size on disk, and a re-open that reads
headers and trailers, never the tensors:

    .safetensors       header length + the end of the last tensor == file size
    .bin .pt .pth .pkl .ckpt .npz    (zip-based torch.save / numpy) the zip's central directory opens
    .npy               header + shape * itemsize == file size
    .json              parses
    .png               ends with the IEND chunk, and PIL reads the header
    .jpg .jpeg .webp   PIL reads the header

A failed check raises OSError(EIO) naming the file, so the callers' existing write-error handling turns it
into their one-line message (`emocli.errors.io_failed`). Imports only the standard library at module level.
"""

from __future__ import annotations

import errno
import json
import os
import struct
import zipfile
from pathlib import Path

_PNG_END = b"IEND\xaeB`\x82"


def incomplete(path: Path, detail: str) -> OSError:
    return OSError(errno.EIO, f"the file is incomplete after writing ({detail}); the device may be full",
                   str(path))


def check_file(path, size: int | None = None) -> None:
    """Raise OSError(EIO) when `path` is shorter than `size` (the bytes the writer meant to write, when
    known) or than its format declares."""
    path = Path(path)
    actual = path.stat().st_size
    if size is not None and actual != size:
        raise incomplete(path, f"{actual} of {size} bytes")
    # The format's suffix, also in staged names such as `.grid.png.tmp` or `x.safetensors.123.tmp`.
    kind = next((s for s in reversed([s.lower() for s in path.suffixes]) if s in _CHECKS), None)
    if kind is None:
        return
    checker = _CHECKS[kind]
    try:
        problem = checker(path, actual)
    except (OSError, ValueError, EOFError, SyntaxError, struct.error, zipfile.BadZipFile) as e:
        problem = f"cannot re-open it: {str(e).splitlines()[0][:120] if str(e) else type(e).__name__}"
    if problem:
        raise incomplete(path, problem)


def check_tree(folder) -> None:
    """check_file on every file under `folder`."""
    for root, _, files in os.walk(folder):
        for name in sorted(files):
            check_file(Path(root) / name)


def publish(tmp, dest) -> None:
    """Check the staged file or folder `tmp`, then rename it to `dest` (replacing a file; a folder `dest`
    must be gone already)."""
    tmp = Path(tmp)
    check_tree(tmp) if tmp.is_dir() else check_file(tmp)
    tmp.replace(dest)


def _safetensors(path: Path, actual: int) -> str | None:
    with path.open("rb") as f:
        head = f.read(8)
        if len(head) < 8:
            return f"{actual} bytes, no header"
        (length,) = struct.unpack("<Q", head)
        if 8 + length > actual:
            return f"header of {length} bytes in a file of {actual}"
        header = json.loads(f.read(length))
    end = max((v["data_offsets"][1] for k, v in header.items() if k != "__metadata__"), default=0)
    expected = 8 + length + end
    return None if expected == actual else f"{actual} of {expected} bytes"


def _zip(path: Path, actual: int) -> str | None:
    with path.open("rb") as f:
        if f.read(4) != b"PK\x03\x04":
            return None  # not zip-based (a legacy torch.save): nothing cheap to check
    with zipfile.ZipFile(path) as z:  # reads the central directory at the end of the file
        z.infolist()
    return None


def _npy(path: Path, actual: int) -> str | None:
    import numpy as np

    array = np.load(path, mmap_mode="r", allow_pickle=False)  # maps, reads nothing; too short: ValueError
    expected = array.offset + array.nbytes
    del array
    return None if expected == actual else f"{actual} of {expected} bytes"


def _json(path: Path, actual: int) -> str | None:
    json.loads(path.read_text(encoding="utf-8"))
    return None


def _image(path: Path, actual: int) -> str | None:
    from PIL import Image

    if ".png" in [s.lower() for s in path.suffixes]:
        with path.open("rb") as f:
            f.seek(max(0, actual - len(_PNG_END)))
            if f.read() != _PNG_END:
                return "no PNG end chunk"
    with Image.open(path) as image:
        image.size  # noqa: B018 - the header parses
    return None


_CHECKS = {".safetensors": _safetensors, ".npy": _npy, ".json": _json,
           **dict.fromkeys([".bin", ".pt", ".pth", ".pkl", ".ckpt", ".npz"], _zip),
           **dict.fromkeys([".png", ".jpg", ".jpeg", ".webp"], _image)}
