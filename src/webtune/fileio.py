"""The one copy of file helpers every stage uses: content hashes, atomic writes (a fresh file under a
temporary name, fsync, rename: a killed run never leaves half a file, and a file shared by hard links
is never written through), JSON and JSONL, link-or-copy; and the one place an input file's bytes are
first opened (`open_input`: .gz decompressed, a byte-order mark skipped)."""
from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import shutil
import tempfile
import zlib
from pathlib import Path
from typing import Any, BinaryIO, Iterator

_UMASK = os.umask(0o22)
os.umask(_UMASK)


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def hash_path(path: Path) -> str:
    """A file's sha256, or for a directory the sha256 of its files' relative names and hashes."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path).as_posix()}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a fresh temporary path beside `path` to write (in one go or streamed); on success it is
    fsynced and renamed into place, on any error removed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)
        yield tmp
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (a power cut after it keeps the new name)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: Path, default: Any = None) -> Any:
    path = Path(path)
    if not path.exists():
        return default
    return json.loads(path.read_text())


def iter_jsonl(path: Path) -> Iterator[Any]:
    """Each non-blank line of a JSONL file, parsed."""
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                yield json.loads(line)


BOM = b"\xef\xbb\xbf"


def compressed(path: Path | str) -> bool:
    return str(path).lower().endswith(".gz")


def uncompressed_name(path: Path | str) -> str:
    """`products.jsonl.gz` -> `products.jsonl`: the name whose extension says the format."""
    name = Path(path).name
    return name[:-3] if compressed(name) else name


def open_input(path: Path | str) -> BinaryIO:
    """An input file's bytes as every reader should see them: a `.gz` decompressed, and a UTF-8
    byte-order mark (Windows exports carry one) skipped, so the first record reads like the rest.
    The stream is positioned after the mark (`tell()` is where the first record starts)."""
    fh = gzip.open(path, "rb") if compressed(path) else open(path, "rb")
    try:
        if fh.read(3) != BOM:
            fh.seek(0)
    except BaseException:
        fh.close()
        raise
    return fh


def damaged(path: Path | str) -> str | None:
    """For a .gz input, what is wrong with its compressed stream (cut short, bad data, not gzip), else
    None. Checked before reading, so a damaged file is one rejection rather than half a file."""
    if not compressed(path):
        return None
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 20):
                pass
    except (EOFError, OSError, zlib.error) as e:
        return f"{type(e).__name__}: {' '.join(str(e).split())[:160]}"
    return None


def read_jsonl(path: Path) -> list:
    return list(iter_jsonl(path))


def link_or_copy(src: Path, dst: Path) -> None:
    """Hard-link src at dst (a copy where links are impossible), replacing what dst was."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.unlink(missing_ok=True)
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def link_tree(src: Path, dst: Path) -> None:
    """Hard-link a file or a folder's files."""
    files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
    for f in files:
        link_or_copy(f, dst if src.is_file() else dst / f.relative_to(src))


def copy_tree(src: Path, dst: Path) -> None:
    """Fresh copies (new inodes, writable) of a file or a folder's files."""
    files = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
    for f in files:
        target = dst if src.is_file() else dst / f.relative_to(src)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, target)
