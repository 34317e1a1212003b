"""Which tarball source a list of tarballs is: the v1 release's (:class:`~benmm.ingest.tar_source.TarSource`)
or reBEN's (:class:`~benmm.ingest.tar_reben.RebenTarSource`), told apart by each tarball's top folder."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from benmm.errors import EncodeError
from benmm.ingest.tar_reben import RebenTarSource
from benmm.ingest.tar_source import StreamSource, TarSource, identify


def open_tar_source(paths: Sequence[str | os.PathLike[str]], splits: tuple[str, ...] | None,
                    metadata: Sequence[str | os.PathLike[str]] = ()) -> StreamSource:
    """The v1 tarballs (:class:`TarSource`) or reBEN's (``metadata``: its parquet files; see
    :class:`benmm.ingest.tar_reben.RebenTarSource`), told apart by their top folders; never mixed."""
    tars = [Path(p).expanduser() for p in paths]
    kinds = {path: identify(path)[0] for path in tars}
    releases = {k.release for k in kinds.values()}
    if len(releases) > 1:
        v1 = next(p for p, k in kinds.items() if k.release == "v1")
        v2 = next(p for p, k in kinds.items() if k.release == "reben")
        raise EncodeError(f"{v1} is a BigEarthNet v1.0 tarball and {v2} a reBEN (v2.0) one; give the "
                          "tarballs of one release")
    if "reben" in releases:
        return RebenTarSource(tars, splits, [Path(m).expanduser() for m in metadata])
    if metadata:
        raise EncodeError(f"--metadata {metadata[0]}: the v1 tarballs ({tars[0]}) need no metadata file "
                          "(their JSONs hold the labels); give it with reBEN's tarballs only")
    return TarSource(tars, splits)
