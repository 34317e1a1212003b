"""Shared fixtures: the real v1 example pairs (extracted once per session), the reBEN sample, the
retrieval index and server, and the session cache of synthetic archives and stores (``synthetic``)."""

from __future__ import annotations

import shutil
import tarfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from benmm.store import Store

DATA = Path(__file__).parent / "data"
V1_TARBALLS = ("BigEarthNet-S2-Example.tar.bz2", "BigEarthNet-S1-Example.tar.bz2")
V1_SAMPLE_S2 = (
    "S2A_MSIL2A_20170613T101031_87_48",
    "S2A_MSIL2A_20170617T113321_36_85",
    "S2A_MSIL2A_20170617T113321_4_55",
    "S2A_MSIL2A_20171221T112501_56_35",
    "S2B_MSIL2A_20170924T93020_69_24",
    "S2B_MSIL2A_20180204T94161_57_38",
)


@pytest.fixture(scope="session")
def v1_sample_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A read-only-by-convention folder holding BigEarthNet-S2-Example/ and BigEarthNet-S1-Example/."""
    root = tmp_path_factory.mktemp("v1-sample")
    for name in V1_TARBALLS:
        with tarfile.open(DATA / "bigearthnet-v1" / name, "r:bz2") as tar:
            tar.extractall(root, filter="data")
    return root


@pytest.fixture()
def v1_sample_copy(v1_sample_root: Path, tmp_path: Path) -> Path:
    """A private, writable copy of the v1 sample (for damage tests)."""
    dst = tmp_path / "v1"
    shutil.copytree(v1_sample_root, dst)
    return dst


@pytest.fixture(scope="session")
def reben_sample_root() -> Path:
    """The published reBEN sample: BigEarthNet-V2-LMDB/ + metadata.parquet (do not modify)."""
    return DATA / "reben-sample"


@pytest.fixture()
def reben_sample_copy(reben_sample_root: Path, tmp_path: Path) -> Path:
    dst = tmp_path / "reben"
    shutil.copytree(reben_sample_root, dst)
    return dst


@pytest.fixture(scope="session")
def retrieval_index_dir(tmp_path_factory: pytest.TempPathFactory, reben_sample_root: Path) -> Path:
    """A saved flat retrieval index over the 24 reBEN sample pairs (band-statistics embeddings, no model):
    archive = train + validation (16 patches), query items = test (8)."""
    from benmm.retrieval.build import index_from_embeddings
    from benmm.retrieval.embed import embed_store

    root = tmp_path_factory.mktemp("retrieval")
    embed_store("band-stats", reben_sample_root, root / "emb", recommended=False)
    index = index_from_embeddings(root / "emb", kind="flat", archive_split=("train", "validation"))
    return index.save(root / "index")


@pytest.fixture(scope="session")
def retrieval_server(retrieval_index_dir: Path):  # type: ignore[no-untyped-def]
    """`benmm serve` on the retrieval index in a subprocess on 127.0.0.1 (a free port); yields its URL."""
    import socket
    import subprocess
    import sys
    import time

    import httpx  # the dev extra installs the service's packages: a broken install fails, never skips
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    proc = subprocess.Popen([sys.executable, "-m", "benmm", "serve", str(retrieval_index_dir),
                             "--host", "127.0.0.1", "--port", str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{url}/api/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                out = proc.stdout.read().decode() if proc.stdout and proc.poll() is not None else ""
                pytest.fail(f"the retrieval server did not start: {out[-2000:]}")
            time.sleep(0.2)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


# ---- synthetic archives and stores (owner: synth) -------------------------------------------------

SYNTH_V1_PAIRS = 60
SYNTH_V1_SEED = 0


class Synthetic:
    """Session cache behind the ``synthetic`` fixture: each synthetic archive and each encoded store is
    built once per distinct argument set and test session, so modules that ask for the same one share it.

    Everything it returns is **read-only by convention**: a test that writes (damages files, deletes
    folders, encodes into a store, ...) takes a private copy with :meth:`copy` first. Use the
    ``make_synth`` fixture instead where a test needs freshly synthesized bytes (determinism tests).
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self._archives: dict[tuple[int, int, str], Path] = {}
        self._stores: dict[tuple[str, tuple[str, ...] | None], Path] = {}

    def archive(self, pairs: int = 20, seed: int = 0, layout: str = "v1") -> Path:
        """``synthesize(root, pairs=pairs, seed=seed, layout=layout, workers=1)``, once per session."""
        from benmm.synth.archive import synthesize

        key = (pairs, seed, layout)
        if key not in self._archives:
            dst = self.root / "archives" / f"{layout}-{pairs}-{seed}"
            synthesize(dst, pairs=pairs, seed=seed, layout=layout, workers=1)  # type: ignore[arg-type]
            self._archives[key] = dst
        return self._archives[key]

    def store(self, pairs: int = 20, seed: int = 0, layout: str = "v1",
              split: str | Sequence[str] | None = None) -> Store:
        """The synthetic :meth:`archive` encoded into a benmm store (``workers=1``), once per session."""
        return self.encoded(self.archive(pairs, seed, layout), split=split)

    def encoded(self, src: Path, split: str | Sequence[str] | None = None) -> Store:
        """Any archive (e.g. the v1 sample) encoded into a benmm store with
        ``encode(src, dst, workers=1, split=split, progress=False)``, once per session; opened afresh on
        every call (a test may set attributes on its Store object, the files are shared)."""
        from benmm.ingest import encode
        from benmm.store import Store

        splits = (split,) if isinstance(split, str) else None if split is None else tuple(split)
        key = (str(Path(src).resolve()), splits)
        if key not in self._stores:
            dst = self.root / "stores" / f"{len(self._stores)}-{Path(src).name}.store"
            encode(src, dst, workers=1, split=list(splits) if splits else None, progress=False)
            self._stores[key] = dst
        return Store.open(self._stores[key])

    @staticmethod
    def copy(src: Path | Store, dst: Path) -> Path:
        """A private, writable copy of a shared archive or store (for tests that write into it)."""
        src = src if isinstance(src, Path) else src.path
        shutil.copytree(src, dst)
        for path in (dst, *dst.rglob("*")):
            if not path.is_symlink():
                path.chmod(path.stat().st_mode | (0o700 if path.is_dir() else 0o600))
        return dst


@pytest.fixture(scope="session")
def synthetic(tmp_path_factory: pytest.TempPathFactory) -> Synthetic:
    """Factory of shared synthetic archives and stores, cached for the session::

        synthetic.archive(pairs=24, seed=3, layout="v1")            -> Path   ("v1" or "reben")
        synthetic.store(pairs=24, seed=3, layout="v1", split=None)  -> Store  (that archive, encoded)
        synthetic.encoded(v1_sample_root)                           -> Store  (any archive, encoded)
        synthetic.copy(shared, tmp_path / "mine")                   -> Path   (private, writable)

    Read-only by convention: copy before writing."""
    return Synthetic(tmp_path_factory.mktemp("synthetic"))


@pytest.fixture(scope="session")
def synth_v1_root(synthetic: Synthetic) -> Path:
    """A seeded synthetic v1 archive (60 pairs: BigEarthNet-v1.0/ + BigEarthNet-S1-v1.0/), built once per
    session. Includes snow, cloud and one no-19-class patch. Read-only by convention: copy it to modify."""
    return synthetic.archive(pairs=SYNTH_V1_PAIRS, seed=SYNTH_V1_SEED, layout="v1")


@pytest.fixture(scope="session")
def v1_sample_store(synthetic: Synthetic, v1_sample_root: Path) -> Store:
    """The 6 real v1 example pairs encoded into a benmm store (``workers=1``), once per session.
    Read-only by convention: ``synthetic.copy(v1_sample_store, tmp_path / "x")`` to modify."""
    return synthetic.encoded(v1_sample_root)


@pytest.fixture()
def make_synth(tmp_path: Path):  # type: ignore[no-untyped-def]
    """Factory: ``make_synth(pairs=20, seed=0, layout="v1"|"reben", name=None) -> Path`` of a *fresh*
    synthetic archive under this test's tmp_path (same arguments, same bytes). For tests of
    synthesis itself; everything else shares archives through ``synthetic``."""
    from benmm.synth.archive import synthesize

    def make(pairs: int = 20, seed: int = 0, layout: str = "v1", name: str | None = None) -> Path:
        dst = tmp_path / (name or f"synth-{layout}-{pairs}-{seed}")
        synthesize(dst, pairs=pairs, seed=seed, layout=layout, workers=1)  # type: ignore[arg-type]
        return dst

    return make
