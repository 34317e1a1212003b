"""Writing a store (layout and content hash: :mod:`benmm.store.layout`), for :mod:`benmm.ingest`.

Resumable and atomic: while writing, every LMDB transaction holds a batch of pairs *and* their
bookkeeping (the SHA-256 of each value, the pair's metadata row, pairs skipped as invalid) in three
named sub-databases of the same environment, so a batch is either wholly committed or absent after a
kill. ``.benmm-encode/`` marks the store as unfinished (readers refuse it). :meth:`StoreWriter.finish`
then writes, each atomically (temp file + fsync + rename): ``metadata.parquet``, the manifest-to-be in
``.benmm-encode/final.json``; drops the sub-databases (one transaction) and syncs; renames the manifest
into place; removes ``.benmm-encode/``. Every step is redone safely if a kill interrupts it.

Speed and disk full: LMDB writes through its shared memory map (``writemap``; measured on the 2-core
VM: ~25% less system time per encode than LMDB's malloc + ``pwrite`` path). Writing into a sparse
mapped file would turn a full disk into a SIGBUS, so before each commit the writer reserves the file
blocks the batch can need with ``posix_fallocate``: a full disk is a clean EncodeError before anything
is written, and every earlier commit stays. The map is sized generously up front (address space, not
disk) and every worker maps it at pool start, so no process shrinks the file under another's map.
``sync=False`` (committed transactions survive a process kill, not a power cut) with one full sync
before the manifest is written; the sealed ``data.mdb`` is cut to its used pages.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Final, NamedTuple

import lmdb

from benmm.archive.refmaps import is_map_key, map_key
from benmm.archive.refmaps import manifest_entry as maps_manifest
from benmm.atomic import TMP_MARK, fsync_dir
from benmm.atomic import atomic_write as _atomic_write
from benmm.errors import EncodeError
from benmm.store.layout import ENCODE_STATE, LMDB_DIR, MANIFEST, METADATA, METADATA_COLUMNS, ContentHasher
from benmm.store.lmdbenv import close_env

FINAL: Final = "final.json"
_DBS: Final = {"digests": b"__benmm_digests__", "meta": b"__benmm_meta__", "skipped": b"__benmm_skipped__",
               "patches": b"__benmm_patches__"}  # per-patch state of a streamed (tarball) encode
_HEADROOM: Final = (8 << 20, 256 << 20)  # bounds of the reserve ahead of the data (1/8 of the map)


class Record(NamedTuple):
    """One validated pair, ready to commit (built in a worker process)."""

    name: str  # pair id = S2 key
    s2_value: bytes | memoryview  # a memoryview may be reused once its chunk is committed
    s2_digest: bytes
    s1_key: str
    s1_value: bytes | memoryview
    s1_digest: bytes
    row: bytes  # the metadata row as canonical JSON
    #: the pair's reBEN reference map value (safetensors {"Data": uint16 [120, 120]}) when the source
    #: has maps, stored under ``<name>_reference_map`` (rico-hdl's key; see benmm.archive.refmaps)
    map_value: bytes | memoryview | None = None
    map_digest: bytes | None = None


def atomic_write(path: Path, data: bytes) -> None:
    """:func:`benmm.atomic.atomic_write`, failing as an EncodeError that says nothing was lost."""
    try:
        _atomic_write(path, data)
    except OSError as exc:
        raise EncodeError(f"{path}: cannot write ({exc.strerror or exc}); nothing already written was "
                          "lost: free space or fix permissions and run the same command again") from None


def write_metadata(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    text, flag, names = pa.string(), pa.bool_(), pa.list_(pa.string())
    types = {"labels": names, "labels43": names, "contains_seasonal_snow": flag,
             "contains_cloud_or_shadow": flag}
    schema = pa.schema([pa.field(c, types.get(c, text)) for c in METADATA_COLUMNS])
    from benmm.store.geoparquet import add_geometry

    rows = sorted(rows, key=lambda r: r["patch_id"])
    table = add_geometry(pa.Table.from_pylist(rows, schema=schema), rows)  # GeoParquet where footprinted
    buf = io.BytesIO()
    pq.write_table(table, buf)
    atomic_write(path, buf.getvalue())


class StoreWriter:
    """Appends validated pairs to the store at ``root`` (created or resumed)."""

    def __init__(self, root: Path, map_size: int, on_event: Callable[[str], None] | None = None) -> None:
        self.root = root
        self.on_event = on_event  # fault injection for tests: see benmm.ingest.pipeline
        self.state = root / ENCODE_STATE
        try:
            (root / LMDB_DIR).mkdir(parents=True, exist_ok=True)
            close_env(root / LMDB_DIR)  # a read handle of ours on these files would clash
            self._commits = 0
            self.data_file = root / LMDB_DIR / "data.mdb"
            self.headroom = min(max(map_size // 8, _HEADROOM[0]), _HEADROOM[1])
            if self.data_file.exists():  # resuming: keep the map at least as large as the file
                map_size = max(map_size, self.data_file.stat().st_size)
            self.env = lmdb.open(str(root / LMDB_DIR), map_size=map_size, max_dbs=len(_DBS), sync=False,
                                 metasync=False, writemap=True, readahead=False, lock=True)
            self._reserve(0)  # fail early on a full disk
            with self.env.begin(write=True) as txn:
                self.dbs = {k: self.env.open_db(v, txn=txn, create=True) for k, v in _DBS.items()}
        except (OSError, lmdb.Error) as exc:
            raise self._error(exc) from None

    def _reserve(self, nbytes: int) -> None:
        """Room in the map and allocated disk blocks for a batch of ``nbytes`` (B-tree pages included).

        The reserved region runs ``headroom`` bytes past what the batch needs, which covers batches other
        worker processes commit meanwhile. Allocating already allocated blocks is a cheap no-op, so this
        runs before every commit (a process that reopens the map may have cut the file to the map size).
        """
        info, psize = self.env.info(), self.env.stat()["psize"]
        need = (info["last_pgno"] + 1) * psize + int(nbytes * 1.1) + self.headroom
        if need > info["map_size"]:
            self.env.set_mapsize(max(need + self.headroom, info["map_size"] * 3 // 2))
        if not hasattr(os, "posix_fallocate"):  # pragma: no cover - macOS/Windows: no reservation
            return
        fd = os.open(self.data_file, os.O_RDWR)
        try:
            os.posix_fallocate(fd, 0, min(need, self.env.info()["map_size"]))
        except OSError as exc:
            if exc.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # no fallocate on this file system
                raise
        finally:
            os.close(fd)

    def _error(self, exc: BaseException) -> EncodeError:
        what = getattr(exc, "strerror", None) or str(exc)
        return EncodeError(f"{self.root}: cannot write the store ({what}); every batch committed so far "
                           "is kept: free disk space or fix permissions and run the same command again "
                           "to resume")

    def done(self) -> set[str]:
        """Pairs already committed (by this or an interrupted earlier run)."""
        with self.env.begin(db=self.dbs["meta"]) as txn:
            return {bytes(k).decode() for k in txn.cursor().iternext(keys=True, values=False)}

    def skipped(self) -> dict[str, str]:
        with self.env.begin(db=self.dbs["skipped"]) as txn:
            return {bytes(k).decode(): bytes(v).decode() for k, v in txn.cursor()}

    def commit(self, records: Sequence[Record], skipped: Sequence[tuple[str, str]] = ()) -> None:
        """Write one batch in one transaction (all or nothing); grows the map when it is full."""
        nbytes = sum(len(r.s2_value) + len(r.s1_value) + len(r.row) + 256
                     + (len(r.map_value) + 128 if r.map_value is not None else 0) for r in records)
        while True:
            try:
                self._reserve(nbytes)
                self._commit(records, skipped)
                return
            except lmdb.MapResizedError:  # another process grew the map: adopt its size
                self.env.set_mapsize(0)
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except (OSError, lmdb.Error) as exc:
                raise self._error(exc) from None

    def _commit(self, records: Sequence[Record], skipped: Sequence[tuple[str, str]]) -> None:
        digests, meta, skip = self.dbs["digests"], self.dbs["meta"], self.dbs["skipped"]
        with self.env.begin(write=True) as txn:
            for r in records:
                s2, s1 = r.name.encode(), r.s1_key.encode()
                values = [(s2, r.s2_value, r.s2_digest), (s1, r.s1_value, r.s1_digest)]
                if r.map_value is not None and r.map_digest is not None:
                    values.append((map_key(r.name).encode(), r.map_value, r.map_digest))
                for key, value, digest in values:
                    if not txn.put(key, digest, db=digests, overwrite=False):
                        raise EncodeError(f"{r.name}: key {key.decode()} is written twice (two pairs share "
                                          "a patch?); check the archive's pairing")
                    txn.put(key, value)
                txn.put(s2, r.row, db=meta)
                txn.delete(s2, db=skip)
            for name, reason in skipped:
                txn.put(name.encode(), reason.encode(), db=skip)
            self._commits += 1
            if self.on_event is not None:  # a test may kill the process with the transaction half done
                self.on_event(f"in-txn:{self._commits}")

    # ---- streamed sources (tarballs): patches are committed one modality at a time, rows at the end ----
    def patch_infos(self) -> Iterator[tuple[str, bytes]]:
        """The per-patch state committed by :meth:`commit_patches`: (key, bytes), in key order."""
        with self.env.begin(db=self.dbs["patches"]) as txn:
            for k, v in txn.cursor():
                yield bytes(k).decode(), bytes(v)

    def commit_patches(self, values: Sequence[tuple[str, bytes | memoryview, bytes]],
                       infos: Sequence[tuple[str, bytes]]) -> None:
        """Write patch values ``(key, value, digest)`` and their state ``(key, info)`` in one transaction
        (all or nothing); a key written twice is an EncodeError."""
        nbytes = sum(len(v) + 256 for _, v, _ in values) + sum(len(i) + 64 for _, i in infos)

        def put(txn: Any) -> None:
            for key, value, digest in values:
                raw = key.encode()
                if not txn.put(raw, digest, db=self.dbs["digests"], overwrite=False):
                    raise EncodeError(f"{key}: this patch is written twice (it is in the tarball twice?); "
                                      "remove the duplicate")
                txn.put(raw, value)
            for key, info in infos:
                txn.put(key.encode(), info, db=self.dbs["patches"])

        self._retry(nbytes, put)

    def commit_rows(self, rows: Sequence[tuple[str, bytes]], skipped: Sequence[tuple[str, str]] = (),
                    drop: Sequence[str] = ()) -> None:
        """Write the pairs' metadata rows, the skipped pairs, and remove the values of keys in ``drop``
        (patches of skipped pairs), in one transaction."""
        nbytes = sum(len(r) + 256 for _, r in rows)

        def put(txn: Any) -> None:
            for name, row in rows:
                txn.put(name.encode(), row, db=self.dbs["meta"])
            for name, reason in skipped:
                txn.put(name.encode(), reason.encode(), db=self.dbs["skipped"])
            for key in drop:
                txn.delete(key.encode())
                txn.delete(key.encode(), db=self.dbs["digests"])

        self._retry(nbytes, put)

    def _retry(self, nbytes: int, put: Callable[[Any], None]) -> None:
        while True:
            try:
                self._reserve(nbytes)
                with self.env.begin(write=True) as txn:
                    put(txn)
                    self._commits += 1
                    if self.on_event is not None:
                        self.on_event(f"in-txn:{self._commits}")
                return
            except lmdb.MapResizedError:
                self.env.set_mapsize(0)
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
            except (OSError, lmdb.Error) as exc:
                raise self._error(exc) from None

    def finish(self, manifest: dict[str, Any]) -> dict[str, Any]:
        """Seal the store: metadata, manifest (content hash, counts), drop bookkeeping. Idempotent.

        ``on_event(point)`` is called between the steps (a test kills the process there).
        """
        die = self.on_event
        final = self.state / FINAL
        if final.is_file():  # an earlier run got this far: its manifest is the one to install
            manifest = json.loads(final.read_text(encoding="utf-8"))
        else:
            hasher = ContentHasher()
            keys = maps = 0
            with self.env.begin() as txn:
                for key, digest in txn.cursor(db=self.dbs["digests"]):
                    hasher.add(bytes(key).decode(), bytes(digest))
                    keys += 1
                    maps += is_map_key(bytes(key).decode())
                rows = [json.loads(bytes(v)) for v in txn.cursor(db=self.dbs["meta"]).iternext(keys=False)]
                skipped = txn.stat(self.dbs["skipped"])["entries"]
            splits: dict[str, int] = {}
            for row in rows:
                splits[str(row["split"])] = splits.get(str(row["split"]), 0) + 1
            with_43 = bool(rows) and all(row["labels43"] is not None for row in rows)
            if maps:  # absent without maps: such a store's manifest (and hash) is what it always was
                manifest = {**manifest, "reference_maps": maps_manifest(maps)}
            placed = sum(row.get("footprint_crs") is not None for row in rows)
            footprints = {"pairs": placed, "crs": "OGC:CRS84", "column": "geometry",
                          "from": manifest.get("footprints", {}).get("from", "")} if placed else {
                "pairs": 0, "why_none": manifest.get("footprints", {}).get("why_none", "")}
            manifest = {**manifest, "pairs": len(rows), "keys": keys, "skipped": skipped,
                        "splits": splits, "footprints": footprints,
                        "label_sets": [19, 43] if with_43 else [19], "content_hash": hasher.hexdigest(rows)}
            write_metadata(self.root / METADATA, rows)
            if die:
                die("metadata")
            atomic_write(final, (json.dumps(manifest, indent=2) + "\n").encode())
        if die:
            die("final")
        try:
            with self.env.begin(write=True) as txn:
                for db in self.dbs.values():
                    txn.drop(db, delete=True)
            self.env.sync(True)
            entries, psize = self.env.stat()["entries"], self.env.stat()["psize"]
            used = (self.env.info()["last_pgno"] + 1) * psize
            self.env.close()
            os.truncate(self.data_file, used)  # drop the reserved, unused tail
        except (OSError, lmdb.Error) as exc:
            raise self._error(exc) from None
        if entries != manifest["keys"]:
            raise EncodeError(f"{self.root}: the LMDB holds {entries} keys after sealing, expected "
                              f"{manifest['keys']}; the destination was modified during the encode")
        if die:
            die("dropped")
        os.replace(final, self.root / MANIFEST)
        fsync_dir(self.root)
        if die:
            die("manifest")
        shutil.rmtree(self.state)
        for tmp in self.root.glob(f".*{TMP_MARK}*"):  # left by a run killed inside atomic_write
            tmp.unlink(missing_ok=True)
        fsync_dir(self.root)
        return manifest

    def close(self) -> None:
        self.env.close()
