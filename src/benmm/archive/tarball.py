"""Stream the members of a tarball (``.tar``, ``.tar.gz``, ``.tar.zst``, ``.tar.bz2``) once, in order,
without extracting anything to disk.

The format is found from the file's first bytes (gzip ``1f 8b``, zstd ``28 b5 2f fd``, bzip2 ``BZh``,
plain tar ``ustar`` at byte 257), never from its suffix alone. A reader thread reads the file and
decompresses it (zlib, zstd and bzip2 release the GIL while they work), handing decoded blocks through a
bounded queue to the consumer, which parses the tar stream (:mod:`benmm.archive.tarstream`) and
gets each member's bytes; decompression therefore overlaps whatever the consumer
does with the members. gzip goes through ``isal`` (Intel ISA-L, several times faster than zlib) when it
is installed, else :mod:`zlib`; zstd through ``zstandard`` (one frame after another: zstd decodes a frame
on one core, and the published archives are one frame); bzip2 through :mod:`bz2`. Concatenated gzip
members and bzip2 streams (pigz, pbzip2) are read one after another.

A truncated or corrupt tarball is an :class:`~benmm.errors.ArchiveError` naming the tarball, the member
being read, the member's offset in the tar stream and the byte of the (compressed) file reached.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Final, NamedTuple

from benmm.archive.tarstream import TarFormatError, iter_tar
from benmm.errors import ArchiveError

FORMATS: Final = ("tar", "tar.gz", "tar.zst", "tar.bz2")
_MAGIC: Final = ((b"\x1f\x8b", "tar.gz"), (b"\x28\xb5\x2f\xfd", "tar.zst"), (b"BZh", "tar.bz2"))
_READ: Final = 1 << 20  # bytes of the file read at a time
_QUEUE: Final = 32  # decoded blocks in flight between the reader thread and the consumer


def tar_format(path: str | os.PathLike[str]) -> str:
    """One of :data:`FORMATS` for the tarball at ``path``, from its magic bytes; ArchiveError otherwise."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(512)
    except OSError as exc:
        raise ArchiveError(f"{path}: cannot read ({exc.strerror or exc})") from None
    for magic, fmt in _MAGIC:
        if head.startswith(magic):
            return fmt
    if head[257:262] == b"ustar":
        return "tar"
    raise ArchiveError(f"{path}: not a tarball (.tar, .tar.gz, .tar.zst or .tar.bz2): it starts with the "
                       f"bytes {head[:8].hex(' ')}")


def is_tarball(path: str | os.PathLike[str]) -> bool:
    try:
        return Path(path).is_file() and bool(tar_format(path))
    except ArchiveError:
        return False


def _decoder(fmt: str) -> Callable[[], Any]:
    """A factory of decompression objects (``decompress``, ``eof``, ``unused_data``) for one member/frame."""
    if fmt == "tar.gz":
        try:
            from isal import isal_zlib  # ISA-L: same API as zlib, several times faster

            return lambda: isal_zlib.decompressobj(wbits=31)
        except ImportError:  # pragma: no cover - isal has wheels for the common platforms
            import zlib

            return lambda: zlib.decompressobj(wbits=31)
    if fmt == "tar.zst":
        import zstandard

        dctx = zstandard.ZstdDecompressor()
        return dctx.decompressobj
    if fmt == "tar.bz2":
        import bz2

        return bz2.BZ2Decompressor
    raise ValueError(fmt)


class _Pipe:
    """The decoded tar stream of a file, produced by a reader thread; a file object for :mod:`tarfile`.

    ``compressed`` is how many bytes of the file the thread has consumed (for progress and errors).
    """

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt = path, fmt
        self.compressed = 0
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(_QUEUE)
        self._done = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, name=f"benmm-untar-{path.name}", daemon=True)
        self._thread.start()

    def _put(self, item: bytes | BaseException | None) -> bool:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            with open(self.path, "rb", buffering=0) as fh:
                if self.fmt == "tar":
                    while chunk := fh.read(_READ):
                        self.compressed += len(chunk)
                        if not self._put(chunk):
                            return
                else:
                    self._decode(fh)
            self._put(None)
        except BaseException as exc:  # handed to the consumer, which names the member
            self._put(exc)

    def _decode(self, fh: Any) -> None:
        make = _decoder(self.fmt)
        dec, started = make(), False
        while chunk := fh.read(_READ):
            self.compressed += len(chunk)
            while chunk:
                out = dec.decompress(chunk)
                started = True
                if out and not self._put(out):
                    return
                if dec.eof:  # end of a gzip member / zstd frame / bzip2 stream: another may follow
                    chunk = dec.unused_data
                    dec, started = make(), False
                else:
                    chunk = b""
        if started:
            raise EOFError(f"the {self.fmt.split('.')[-1]} stream ends before its end marker "
                           "(file truncated)")

    def read(self) -> bytes:
        """The next decoded block (b"" at the end); re-raises the reader thread's error."""
        if self._done:
            return b""
        item = self._queue.get()
        if item is None or isinstance(item, BaseException):
            self._done = True
            if item is not None:
                raise item
            return b""
        return item

    def close(self) -> None:
        self._stop.set()
        self._thread.join()


class Member(NamedTuple):
    """One regular file of a tarball: its path, size and bytes (None when the caller skipped it)."""

    path: str
    size: int
    data: bytes | None


class TarballReader:
    """``for m in TarballReader(path, want=...)``: the regular-file members of a tarball in stream order,
    each member's bytes read only when ``want(path)`` is true. ``compressed`` / ``total``: bytes of the
    file consumed so far / in all (progress)."""

    def __init__(self, path: str | os.PathLike[str], want: Callable[[str], bool] | None = None) -> None:
        self.path = Path(path)
        self.format = tar_format(self.path)
        self.total = self.path.stat().st_size
        self.want = want
        self._pipe: _Pipe | None = None

    @property
    def compressed(self) -> int:
        return self._pipe.compressed if self._pipe is not None else 0

    def __iter__(self) -> Iterator[Member]:
        pipe = self._pipe = _Pipe(self.path, self.format)
        current: list[Any] = [0, ""]
        last = ""
        try:
            try:
                for entry in iter_tar(pipe.read, self.want, current):
                    last = entry.path
                    yield Member(entry.path, entry.size, entry.data)
            except (TarFormatError, EOFError, OSError, ValueError, MemoryError) as exc:
                raise self._damaged(exc, current, last) from None
            except Exception as exc:
                if type(exc).__module__.startswith(("zstandard", "zlib", "isal")):
                    raise self._damaged(exc, current, last) from None
                raise
        finally:
            pipe.close()

    def _damaged(self, exc: BaseException, current: list[Any], last: str) -> ArchiveError:
        offset, name = current
        if name:
            where = f"in member {name} (its header at byte {offset:,} of the tar stream)"
        elif last:
            where = f"at byte {offset:,} of the tar stream, after member {last}"
        else:
            where = f"at byte {offset:,} of the tar stream, before its first file"
        what = str(exc) or type(exc).__name__
        return ArchiveError(f"{self.path}: truncated or corrupt ({self.format}; {self.compressed:,} of "
                            f"{self.total:,} bytes of the file read) {where}: {what}; the patches before it "
                            "are kept: download the tarball again and rerun the same command to resume")


def first_member(path: str | os.PathLike[str]) -> str | None:
    """The path of the first regular file in the tarball (reads only its beginning)."""
    reader = TarballReader(path, want=lambda _: False)
    for member in reader:
        return member.path
    return None
