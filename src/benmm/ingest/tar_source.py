"""Encode straight from the published tarballs: each read once, in stream order, nothing extracted.

S1 and S2 patches are independent values in a store, so each tarball's patches are validated and
committed as they stream by (:meth:`StreamSource.stream`, one LMDB transaction per ``commit_pairs``
patches, with each patch's state: its metadata JSON, or why it is invalid). Once both v1 tarballs are
read (:class:`TarSource`), the pairs are formed from the S1 JSONs' ``corresponding_s2_patch``, labels and
partners are checked, and the metadata rows are written; the pipeline (:mod:`benmm.ingest.pipeline`)
then seals the store as for folders, to the same content hash. reBEN's tarballs share the streaming and
pair from ``metadata.parquet`` instead (:mod:`benmm.ingest.tar_reben`).

Resumable: a rerun reads the tarballs again but skips the members of committed patches (no parsing, no
writing), and skips a tarball that was read to its end (same size and modification time) altogether.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

from benmm.archive.tarball import TarballReader, first_member
from benmm.archive.v1_files import JSON_SUFFIX
from benmm.errors import ArchiveError, EncodeError
from benmm.ingest.sources import Source, V1Source, check_labels, v1_row
from benmm.ingest.tar_commit import Committer
from benmm.ingest.tar_kinds import PatchKind, kind_of
from benmm.store.layout import canonical_row
from benmm.store.writer import StoreWriter

_DONE: Final = "\x00tarball-read:"  # state key of a tarball read to its end (never a patch name)
_ROW_BATCH: Final = 20_000
_ROLE_NAME: Final = {"s2": "Sentinel-2", "s1": "Sentinel-1"}
#: what the pairing keeps in memory of each patch (its JSON stays in the store's bookkeeping): role,
#: 43-class labels, partner named by an S1 JSON, why it is invalid; ~100 bytes for each of 1.18M patches
#: and its footprint (the metadata-row fields, S2 only)
Summary = tuple[str, tuple[str, ...] | None, str | None, str | None, dict[str, Any] | None]


def identify(path: Path) -> tuple[PatchKind, str]:
    """The kind of the tarball at ``path`` and its top folder, from its first member."""
    if path.is_dir():
        raise EncodeError(f"{path} is a folder: give one archive folder, or the tarballs "
                          "(Sentinel-2 and Sentinel-1)")
    if not path.is_file():
        raise EncodeError(f"{path}: no such tarball")
    member = first_member(path)
    if member is None:
        raise ArchiveError(f"{path}: the tarball holds no file")
    top = member.strip("/").split("/")[0]
    return kind_of(top, str(path)), top


def _fingerprint(path: Path) -> dict[str, int]:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns}


class StreamSource(Source):
    """Tarballs streamed into a store (:meth:`stream`): the reading and committing shared by the v1
    tarballs (:class:`TarSource`) and reBEN's (:class:`benmm.ingest.tar_reben.RebenTarSource`).
    A subclass sets ``tarballs``, ``kinds`` and ``tops`` (by role, in reading order) and says which
    patches it wants (:meth:`_wanted`), which built ones it keeps (:meth:`_keep`) and how the pairs and
    their rows are formed once every tarball is read (:meth:`_pair`)."""

    tarballs: dict[str, Path]
    kinds: dict[str, PatchKind]
    tops: dict[str, str]

    def param_path(self) -> list[str]:
        return [str(p.resolve()) for p in self.tarballs.values()]

    @property
    def label(self) -> str:
        return " + ".join(str(p) for p in self.tarballs.values())

    @property
    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.tarballs.values())

    def size_hint(self, pairs: int, per_pair: int) -> int:
        # compressed archives shrink ~1.2-2x; the map grows when full (one writing process)
        return self.total_bytes * 3 + (256 << 20)

    def _wanted(self, role: str, patch: str) -> bool:
        raise NotImplementedError

    def _keep(self, role: str, info: dict[str, Any]) -> bool:
        return True

    def _pair(self, infos: dict[str, Summary], writer: StoreWriter, skip_invalid: bool
              ) -> list[tuple[str, str]]:
        raise NotImplementedError

    def _summary(self, info: dict[str, Any]) -> Summary:
        labels = info.get("labels43")
        key = tuple(labels) if labels is not None else None
        return (info["role"], self._labels.setdefault(key, key) if key else None, info.get("partner"),
                info.get("invalid"), info.get("footprint") or None)

    def stream(self, writer: StoreWriter, skip_invalid: bool, commit_pairs: int,
               on_progress: Callable[[int, int], None] | None = None,
               on_event: Callable[[str], None] | None = None) -> tuple[int, int]:
        """Read each tarball into ``writer``, then pair and write the rows; (pairs written, bytes)."""
        self._labels: dict[tuple[str, ...], tuple[str, ...]] = {}  # one tuple per distinct label set
        infos: dict[str, Summary] = {}
        marks: dict[str, Any] = {}
        for key, raw in writer.patch_infos():
            if key.startswith(_DONE):
                marks[key] = json.loads(raw)
            else:
                infos[key] = self._summary(json.loads(raw))
        before = {k for k, v in infos.items() if v[3] is None}
        nbytes, base, commits = 0, 0, [0]
        for role in self.tarballs:
            path = self.tarballs[role]
            mark = _fingerprint(path)
            if marks.get(_DONE + role) != mark:
                nbytes += self._read(role, writer, infos, skip_invalid, commit_pairs, base, on_progress,
                                     on_event, commits)
            base += path.stat().st_size
            if on_progress is not None:
                on_progress(base, 0)
        pairs = self._pair(infos, writer, skip_invalid)
        return sum(1 for s2, s1 in pairs if s2 not in before or s1 not in before), nbytes

    def _read(self, role: str, writer: StoreWriter, infos: dict[str, Summary], skip_invalid: bool,
              commit_pairs: int, base: int, on_progress: Callable[[int, int], None] | None,
              on_event: Callable[[str], None] | None, commits: list[int]) -> int:
        kind, path, top = self.kinds[role], self.tarballs[role], self.tops[role]
        expected: dict[str, frozenset[str]] = {}  # patch -> its file names; absent = not read

        def want(member: str) -> bool:
            where = kind.patch_of(member)
            if where is None:
                return False
            patch, fname = where
            files = expected.get(patch)
            if files is None:
                done = kind.key(patch) in infos and infos[kind.key(patch)][3] is None
                ok = not done and self._wanted(role, patch)
                files = expected[patch] = frozenset(kind.files(patch)) if ok else frozenset()
            return fname in files

        pending: dict[str, dict[str, bytes]] = {}
        committer = Committer(writer, kind.layout.size, commit_pairs, on_event, commits)

        def finish(patch: str, files: dict[str, bytes]) -> None:
            where = f"{path}:{kind.folder(top, patch)}"
            buf = committer.take()
            try:
                info = kind.build(patch, files, where, buf)
            except ArchiveError as exc:
                committer.give_back(buf)
                if not skip_invalid:
                    committer.flush()
                    raise EncodeError(f"invalid patch {patch}: {exc}. Fix or remove it, or rerun with "
                                      "--skip-invalid to skip invalid pairs (each is listed)") from None
                info = {"role": role, "invalid": str(exc), "member": where}
                committer.submit(kind.key(patch), None, json.dumps(info).encode())
                infos[kind.key(patch)] = self._summary(info)
                return
            if not self._keep(role, info):
                committer.give_back(buf)
                return
            committer.submit(kind.key(patch), buf, json.dumps(info).encode())
            infos[kind.key(patch)] = self._summary(info)

        try:
            reader = TarballReader(path, want)
            last = time.monotonic()
            for member in reader:
                if on_progress is not None and time.monotonic() - last > 0.2:
                    last = time.monotonic()
                    on_progress(base + reader.compressed, 0)
                if member.data is None:
                    continue
                patch, fname = kind.patch_of(member.path) or ("", "")
                files = pending.setdefault(patch, {})
                files[fname] = member.data
                if len(files) == len(expected[patch]):
                    finish(patch, pending.pop(patch))
            for patch in sorted(pending):  # incomplete patch folders: build() names the missing member
                finish(patch, pending.pop(patch))
            committer.submit(_DONE + role, None, json.dumps(_fingerprint(path)).encode())
            committer.flush()
        except ArchiveError:
            committer.flush()  # what was read before the damage is kept
            raise
        finally:
            committer.close()
        return committer.written


class TarSource(StreamSource):
    """The two v1 tarballs (S2 and S1, in any order; ``.tar``, ``.tar.gz``, ``.tar.zst``, ``.tar.bz2``)."""

    kind = "v1-tar"
    footprints = V1Source.footprints

    def __init__(self, paths: Sequence[Path], splits: tuple[str, ...] | None) -> None:
        if len(paths) != 2:
            raise EncodeError(f"give the two tarballs of BigEarthNet v1.0 (Sentinel-2 and Sentinel-1), got "
                              f"{len(paths)}: {', '.join(map(str, paths))}")
        found: dict[str, tuple[Path, PatchKind, str]] = {}
        for path in paths:
            kind, top = identify(path)
            if kind.role in found:
                other = found[kind.role][0]
                raise EncodeError(f"{path} and {other} both hold {_ROLE_NAME[kind.role]} patches ({top}/); "
                                  "give one Sentinel-2 and one Sentinel-1 tarball")
            found[kind.role] = (path, kind, top)
        super().__init__(found["s2"][0], splits)
        self.tarballs = {role: found[role][0] for role in ("s2", "s1")}
        self.kinds = {role: found[role][1] for role in ("s2", "s1")}
        self.tops = {role: found[role][2] for role in ("s2", "s1")}

    def _wanted_pair(self, s2_name: str) -> bool:
        if not self.splits:
            return True
        from benmm.archive.splits import v1_info

        info = v1_info(s2_name)
        return info is not None and info.split in self.splits

    def _wanted(self, role: str, patch: str) -> bool:
        return self.kinds[role].is_patch(patch) and (role != "s2" or self._wanted_pair(patch))

    def _keep(self, role: str, info: dict[str, Any]) -> bool:
        return role != "s1" or self._wanted_pair(info["partner"])

    def _member(self, role: str, patch: str) -> str:
        return f"{self.tarballs[role]}:{self.tops[role]}/{patch}/{patch}{JSON_SUFFIX}"

    def _pair(self, infos: dict[str, Summary], writer: StoreWriter, skip_invalid: bool
              ) -> list[tuple[str, str]]:
        """Pairs from the S1 JSONs, labels and partners checked; rows written (and skipped pairs listed,
        their values removed, with ``skip_invalid``). Returns the (S2, S1) names of the pairs."""
        from benmm.archive.v1 import _make_pair

        s2 = {k: v for k, v in infos.items() if v[0] == "s2"}
        s1 = {k: v for k, v in infos.items() if v[0] == "s1"}
        claims: dict[str, list[str]] = {}
        for name, (_, _, partner, _, _) in sorted(s1.items()):
            if partner is not None:
                claims.setdefault(partner, []).append(name)
        pairs: list[tuple[str, str]] = []
        rows: list[tuple[str, bytes]] = []
        bad: list[tuple[str, str]] = []
        drop: list[str] = []
        s1_tar, s2_tar = self.tarballs["s1"], self.tarballs["s2"]
        for name, (_, labels, _, invalid, place) in sorted(s2.items()):
            partners = claims.get(name, [])
            other = s1.get(partners[0]) if len(partners) == 1 else None
            if invalid is not None:
                reason = invalid
            elif not partners:
                reason = (f"{self._member('s2', name)}: no Sentinel-1 patch in {s1_tar} names it as its "
                          "corresponding_s2_patch (the partner is missing)")
            elif len(partners) > 1:
                reason = (f"{s1_tar}: {', '.join(partners)} all name {name} as corresponding_s2_patch; "
                          "remove the duplicates")
            elif other is None or other[3] is not None:
                reason = other[3] if other and other[3] else "its Sentinel-1 partner is unreadable"
            elif other[1] != labels or labels is None:
                reason = (f"{self._member('s1', partners[0])}: labels differ from the Sentinel-2 partner's "
                          f"({self._member('s2', name)})")
            else:
                pair = _make_pair(name, partners[0], {}, list(labels), {}, {}, lists=True)
                check_labels(pair.labels19, pair.labels43, self._member("s2", name))
                rows.append((name, canonical_row({**v1_row(name, pair), **(place or {})})))
                pairs.append((name, partners[0]))
                continue
            bad.append((name, reason))
            drop += [k for k in (name, *partners) if k in infos and infos[k][3] is None]
        for name, (_, _, partner, invalid, _) in sorted(s1.items()):
            if invalid is not None:
                bad.append((name, invalid))
            elif partner is not None and partner not in s2:
                bad.append((name, f"{self._member('s1', name)}: its partner {partner} "
                                  f"(corresponding_s2_patch) is not in {s2_tar}"))
                drop.append(name)
        if bad and not skip_invalid:
            name, reason = bad[0]
            raise EncodeError(f"invalid pair {name}: {reason}. Fix or remove it, or rerun with "
                              "--skip-invalid to skip invalid pairs (each is listed)")
        if not rows:
            raise EncodeError(f"{s2_tar} and {s1_tar} hold no valid pair; nothing to encode")
        for i in range(0, len(rows), _ROW_BATCH):
            last = i + _ROW_BATCH >= len(rows)
            writer.commit_rows(rows[i:i + _ROW_BATCH], bad if last else (), drop if last else ())
        return pairs
