"""Pack a synthetic v1 archive as the published tarballs: ``BigEarthNet-S2-v1.0.tar.*`` holding
``BigEarthNet-v1.0/<S2 patch>/...`` and ``BigEarthNet-S1-v1.0.tar.*`` holding ``BigEarthNet-S1-v1.0/...``.

Laid out like the published tarballs (and the example tarballs in ``tests/data``, checked in a test):
GNU tar format, the top folder's entry first, then each patch folder's entry followed by its files.
Members are sorted and their owner and time fixed, so the same archive packs to the same tarball bytes.
:func:`pack_reben` packs a reBEN GeoTIFF release (``benmm synth --layout reben-release``) the same way
into the tarballs its publishers ship (:func:`benmm.synth.release.release_files`), each folder's entry
before its files; the metadata parquet files stay loose beside them.
zstd at level 6 with every core (reBEN's tarballs are zstd level 6), gzip through ``isal`` when installed
(ISA-L's fastest level, standard gzip output) else :mod:`gzip`, bzip2 at level 9 like ``tar -j``.
"""

from __future__ import annotations

import contextlib
import os
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Final

from benmm.errors import BenmmError

PACKS: Final = ("tar", "tar.gz", "tar.zst", "tar.bz2")
#: top folder -> the published tarball's name (without the format suffix)
TARBALLS: Final = {"BigEarthNet-v1.0": "BigEarthNet-S2-v1.0", "BigEarthNet-S1-v1.0": "BigEarthNet-S1-v1.0"}
ZSTD_LEVEL: Final = 6
_MTIME: Final = 1_546_300_800  # 2019-01-01, fixed so that packing is reproducible


@contextlib.contextmanager
def _compressed(path: Path, fmt: str) -> Iterator[IO[bytes]]:
    with open(path, "wb") as raw:
        if fmt == "tar":
            yield raw
        elif fmt == "tar.zst":
            import zstandard

            cctx = zstandard.ZstdCompressor(level=ZSTD_LEVEL, threads=-1, write_checksum=True)
            with cctx.stream_writer(raw, closefd=False) as out:
                yield out
        elif fmt == "tar.gz":
            try:
                from isal import igzip as gz
            except ImportError:  # pragma: no cover - isal has wheels for the common platforms
                import gzip as gz  # type: ignore[no-redef]
            with gz.GzipFile(fileobj=raw, mode="wb", mtime=0) as out:
                yield out  # type: ignore[misc]
        elif fmt == "tar.bz2":
            import bz2

            with bz2.BZ2File(raw, "wb", compresslevel=9) as out:
                yield out
        else:
            raise BenmmError(f"unknown pack format {fmt!r}; use one of {', '.join(PACKS)}")


def _info(name: str, size: int = 0, folder: bool = False) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name + "/" if folder else name)
    info.type = tarfile.DIRTYPE if folder else tarfile.REGTYPE
    info.mode = 0o775 if folder else 0o664
    info.size, info.mtime = size, _MTIME
    return info


def pack_tree(root: Path, top: str, dst: Path, fmt: str) -> Path:
    """Pack ``root/top`` (one folder per patch) into the tarball ``dst``."""
    tmp = dst.with_name(dst.name + ".partial")
    with _compressed(tmp, fmt) as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(_info(top, folder=True))
        for patch in sorted(os.listdir(root / top)):
            tar.addfile(_info(f"{top}/{patch}", folder=True))
            for fname in sorted(os.listdir(root / top / patch)):
                path = root / top / patch / fname
                with open(path, "rb") as fh:
                    tar.addfile(_info(f"{top}/{patch}/{fname}", path.stat().st_size), fh)
    os.replace(tmp, dst)
    return dst


def pack_v1(root: str | os.PathLike[str], fmt: str, dst: str | os.PathLike[str] | None = None,
            remove: bool = False) -> list[Path]:
    """Pack the v1 archive at ``root`` into its two tarballs in ``dst`` (default: ``root``); ``remove``
    deletes the two folders afterwards. Returns the tarballs' paths (S2 first)."""
    if fmt not in PACKS:
        raise BenmmError(f"unknown pack format {fmt!r}; use one of {', '.join(PACKS)}")
    src, out = Path(root), Path(dst if dst is not None else root)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for top, name in TARBALLS.items():
        if not (src / top).is_dir():
            raise BenmmError(f"{src}: no {top}/ folder; pack a v1 archive (benmm synth --layout v1)")
        paths.append(pack_tree(src, top, out / f"{name}.{fmt}", fmt))
    if remove:
        import shutil

        for top in TARBALLS:
            shutil.rmtree(src / top)
    return paths


def pack_files(root: Path, files: list[str], dst: Path, fmt: str) -> Path:
    """Pack ``files`` (POSIX paths relative to ``root``, sorted) into the tarball ``dst``, each folder's
    entry written once, before the first file in it."""
    tmp = dst.with_name(dst.name + ".partial")
    seen: set[str] = set()
    with _compressed(tmp, fmt) as out, tarfile.open(fileobj=out, mode="w|", format=tarfile.GNU_FORMAT) as tar:
        for rel in files:
            parts = rel.split("/")
            for depth in range(1, len(parts)):
                folder = "/".join(parts[:depth])
                if folder not in seen:
                    seen.add(folder)
                    tar.addfile(_info(folder, folder=True))
            path = root / rel
            with open(path, "rb") as fh:
                tar.addfile(_info(rel, path.stat().st_size), fh)
    os.replace(tmp, dst)
    return dst


def pack_reben(root: str | os.PathLike[str], fmt: str, dst: str | os.PathLike[str] | None = None,
               remove: bool = False) -> list[Path]:
    """Pack the reBEN GeoTIFF release at ``root`` into ``BigEarthNet-S1.<fmt>``, ``BigEarthNet-S2.<fmt>``
    and ``Reference_Maps.<fmt>`` in ``dst`` (default: ``root``; the metadata files are copied there when
    it is another folder); ``remove`` deletes the three folders afterwards. Returns the tarballs' paths."""
    import shutil

    from benmm.synth.release import RELEASE_TARBALLS, release_files

    if fmt not in PACKS:
        raise BenmmError(f"unknown pack format {fmt!r}; use one of {', '.join(PACKS)}")
    src, out = Path(root), Path(dst if dst is not None else root)
    if not (src / next(iter(RELEASE_TARBALLS))).is_dir():
        raise BenmmError(f"{src}: no {next(iter(RELEASE_TARBALLS))}/ folder; pack a reBEN release "
                         "(benmm synth --layout reben-release)")
    out.mkdir(parents=True, exist_ok=True)
    listing = release_files(src)
    paths = []
    for tarball, files in listing.items():
        if tarball and files:
            name = tarball.removesuffix(".tar.zst")
            paths.append(pack_files(src, files, out / f"{name}.{fmt}", fmt))
    if out.resolve() != src.resolve():
        for loose in listing[""]:
            shutil.copy2(src / loose, out / loose)
    if remove:
        for folder in RELEASE_TARBALLS:
            shutil.rmtree(src / folder, ignore_errors=True)
    return paths
