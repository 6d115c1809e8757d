"""Paths that may be local folders or cloud URIs (s3://, gs://), through pyarrow's filesystems."""
from __future__ import annotations

import contextlib
import fcntl
import io
import json
import os
import posixpath
import socket
import time
from collections.abc import Iterator
from typing import Any

import pyarrow.fs as pafs


def is_uri(path: str) -> bool:
    """True for s3://, gs://, hdfs:// ... paths; False for local ones."""
    return "://" in path and not path.startswith("file://")


def resolve(path: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path or a URI."""
    if is_uri(path):
        fs, inner = pafs.FileSystem.from_uri(path)
        return fs, inner
    if path.startswith("file://"):
        path = path[len("file://"):]
    return pafs.LocalFileSystem(), os.path.abspath(path)


def join(base: str, *parts: str) -> str:
    """Join path parts with '/', keeping a URI's scheme intact."""
    if is_uri(base):
        return posixpath.join(base, *parts)
    return os.path.join(base, *parts)


def absolute(path: str) -> str:
    """A path every Ray worker can use: URIs unchanged, local paths made absolute."""
    return path if is_uri(path) else os.path.abspath(path)


def exists(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type != pafs.FileType.NotFound


def is_dir(path: str) -> bool:
    fs, p = resolve(path)
    return fs.get_file_info(p).type == pafs.FileType.Directory


def makedirs(path: str) -> None:
    fs, p = resolve(path)
    fs.create_dir(p, recursive=True)


def read_bytes(path: str) -> bytes:
    fs, p = resolve(path)
    with fs.open_input_stream(p) as f:
        return f.read()


def read_text(path: str) -> str:
    return read_bytes(path).decode("utf-8")


def write_bytes(path: str, data: bytes) -> None:
    """Write atomically where the filesystem allows it (temp name, then rename)."""
    fs, p = resolve(path)
    fs.create_dir(posixpath.dirname(p) if is_uri(path) else os.path.dirname(p), recursive=True)
    tmp = p + ".tmp"
    with fs.open_output_stream(tmp) as f:
        f.write(data)
    try:
        fs.move(tmp, p)
    except OSError:  # object stores without rename: the upload itself is atomic
        with fs.open_output_stream(p) as f:
            f.write(data)
        fs.delete_file(tmp)


def write_text(path: str, text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def read_json(path: str) -> Any:
    return json.loads(read_text(path))


def write_json(path: str, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def delete_dir(path: str) -> None:
    fs, p = resolve(path)
    if fs.get_file_info(p).type == pafs.FileType.Directory:
        fs.delete_dir(p)


def delete_file(path: str) -> None:
    fs, p = resolve(path)
    fs.delete_file(p)


def move(src: str, dst: str) -> None:
    fs, s = resolve(src)
    _, d = resolve(dst)
    fs.move(s, d)


def list_files(path: str, suffixes: tuple[str, ...] | None = None, recursive: bool = True) -> list[str]:
    """Sorted file paths below `path` (URIs keep their scheme), optionally filtered by suffix."""
    fs, p = resolve(path)
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=recursive, allow_not_found=True))
    prefix = path.split("://", 1)[0] + "://" if is_uri(path) else ""
    out = []
    for info in infos:
        if info.type != pafs.FileType.File:
            continue
        if suffixes and not info.path.lower().endswith(suffixes):
            continue
        out.append(prefix + info.path)
    return sorted(out)


def list_dirs(path: str) -> list[str]:
    """Sorted names of the immediate sub-folders of `path`."""
    fs, p = resolve(path)
    infos = fs.get_file_info(pafs.FileSelector(p, recursive=False, allow_not_found=True))
    return sorted(posixpath.basename(i.path) for i in infos if i.type == pafs.FileType.Directory)


def open_output(path: str) -> io.RawIOBase:
    fs, p = resolve(path)
    return fs.open_output_stream(p)


def is_model_uri(value: str) -> bool:
    """An MLflow model URI (models:/NAME@ALIAS, models:/NAME/VERSION, runs:/RUN_ID/NAME), not a folder."""
    return value.startswith(("models:/", "runs:/"))


class BusyError(RuntimeError):
    """Another process holds the folder (a run writing into it)."""


@contextlib.contextmanager
def exclusive(folder: str, what: str = "out", wait: bool = False, lock_file: str = "") -> Iterator[None]:
    """Hold <folder>/.inetseg.lock (or `lock_file`) for the block, created if needed: a second run on the same local
    folder gets a one-line BusyError naming the holder instead of interleaving its writes (with wait, it waits its
    turn: tune trials sharing a stage folder). A lock_file beside the folder survives a stage that deletes and
    re-creates its folder. The OS drops the lock when the holder dies, so a killed run never leaves it stale. URIs
    (s3://, gs://) are not locked."""
    if is_uri(folder):
        yield
        return
    path = lock_file or os.path.join(folder, ".inetseg.lock")
    while True:
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        f = open(path, "a+")
        try:
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            f.close()
            raise BusyError(f"{what}={folder} is in use by another run ({holder}); wait "
                            "for it to finish or choose another out") from None
        try:  # the file we locked may have been deleted (a wiped out folder) while we waited: lock the new one
            same = os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        f.close()
    with f:
        f.truncate(0)
        f.write(f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)
