"""The retrieval service's footprints and the page's map: hit records carry each patch's footprint from
the store's GeoParquet, and headless chromium draws the query and its results on the offline outline of
Europe (markers where the footprints' centres project), or says why there is no map."""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import geopandas as gpd
import pytest
from fastapi.testclient import TestClient

from benmm.retrieval.service.app import STATIC_DIR, create_app
from benmm.store import Store

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# as in test_browser.py: CI installs chromium where it can, and says so where it cannot
NEEDS_CHROMIUM = pytest.mark.skipif(CHROMIUM is None,
                                    reason="chromium is not installed (apt-get install chromium)")
FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--disable-dev-shm-usage")


@pytest.fixture(scope="module")
def geo_index(v1_sample_store: Store, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A flat band-statistics index over the 6 real example pairs' store (which has footprints)."""
    from benmm.retrieval.build import index_from_embeddings
    from benmm.retrieval.embed import embed_store

    store = v1_sample_store
    root = tmp_path_factory.mktemp("geo-index")
    embed_store("band-stats", store.path, root / "emb", recommended=False)
    return index_from_embeddings(root / "emb", kind="flat").save(root / "index")


def _store_centres(index: Path) -> dict[str, tuple[float, float]]:
    from benmm.retrieval.index import RetrievalIndex

    store = RetrievalIndex.load(index).source["store"]
    gdf = gpd.read_parquet(Path(store) / "metadata.parquet")
    b = gdf.geometry.bounds
    return {n: ((x0 + x1) / 2, (y0 + y1) / 2)
            for n, x0, y0, x1, y1 in zip(gdf["patch_id"], b.minx, b.miny, b.maxx, b.maxy, strict=True)}


def test_hits_carry_footprints(geo_index: Path, retrieval_index_dir: Path) -> None:
    client = TestClient(create_app(geo_index, embedder=None))
    health = client.get("/api/health").json()
    assert health["footprints"] == 6 and health["footprints_note"] is None
    name = client.get("/api/random").json()["name"]
    data = client.get("/api/search", params={"name": name, "k": 5}).json()
    centres = _store_centres(geo_index)
    for rec in (data["query"], *data["results"]):
        fp = rec["footprint"]
        assert fp["center"] == pytest.approx(centres[rec["name"]], abs=1e-9)
        lon0, lat0, lon1, lat1 = fp["bbox"]
        assert lon0 < fp["center"][0] < lon1 and lat0 < fp["center"][1] < lat1
        assert 0.005 < lat1 - lat0 < 0.02  # 1.2 km
    # a reBEN LMDB index: no footprints, and the health says why
    client = TestClient(create_app(retrieval_index_dir, embedder=None))
    health = client.get("/api/health").json()
    assert health["footprints"] == 0 and "no footprints" in health["footprints_note"]
    name = client.get("/api/random").json()["name"]
    data = client.get("/api/search", params={"name": name, "k": 3}).json()
    assert data["query"]["footprint"] is None and all(r["footprint"] is None for r in data["results"])


def test_outline_resource_is_small_and_attributed() -> None:
    path = STATIC_DIR / "europe.json"
    assert path.stat().st_size < 200_000
    doc = json.loads(path.read_text())
    lon0, lat0, lon1, lat1 = doc["bbox"]
    assert len(doc["lines"]) > 100 and "Natural Earth" in doc["source"]
    assert all(lon0 <= x <= lon1 and lat0 <= y <= lat1 for line in doc["lines"] for x, y in line)
    text = (STATIC_DIR / "ATTRIBUTION.md").read_text()
    assert "Natural Earth" in text and "public domain" in text and "world-atlas" in text


class _Map(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.svg: dict[str, str | None] = {}
        self.markers: list[dict[str, str | None]] = []
        self.paths: list[str] = []
        self.note = ""
        self._in_note = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "svg" and a.get("id") == "map":
            self.svg = a
        elif tag == "circle":
            self.markers.append(a)
        elif tag == "path" and a.get("class") in ("outline", "graticule"):
            self.paths.append(str(a.get("class")))
        self._in_note = a.get("id") == "map-note"

    def handle_data(self, data: str) -> None:
        if self._in_note:
            self.note += data
            self._in_note = False


@contextlib.contextmanager
def _serve(index: Path) -> Iterator[str]:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(create_app(index, embedder=None), host="127.0.0.1", port=0,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        with contextlib.suppress(RuntimeError):
            thread.join(10)


def _dom(url: str, tmp_path: Path) -> str:
    assert CHROMIUM is not None, "chromium is needed for the browser tests (apt-get install chromium)"
    run = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / str(time.monotonic_ns())}",
                          "--virtual-time-budget=15000", "--dump-dom", url],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stdout


@pytest.mark.browser
@NEEDS_CHROMIUM
def test_page_draws_the_query_and_results_on_the_map(geo_index: Path, tmp_path: Path) -> None:
    outline = json.loads((STATIC_DIR / "europe.json").read_text())
    lon0, lat0, lon1, lat1 = outline["bbox"]
    k = math.cos(math.radians((lat0 + lat1) / 2))
    scale = 320 / ((lon1 - lon0) * k)  # map.js: equirectangular, 320 units wide

    def xy(lon: float, lat: float) -> tuple[float, float]:
        return (lon - lon0) * k * scale, (lat1 - lat) * scale

    with _serve(geo_index) as url:
        client = TestClient(create_app(geo_index, embedder=None))
        name = client.get("/api/random").json()["name"]
        expected = client.get("/api/search", params={"name": name, "k": 5}).json()
        dom = _Map()
        dom.feed(_dom(f"{url}/?name={name}&k=5", tmp_path))
    assert dom.svg.get("data-state") == "drawn", dom.note
    assert dom.svg.get("data-hits") == "5" and dom.svg.get("data-query") == "1"
    assert "hidden" not in dom.svg
    assert dom.paths == ["graticule", "outline"]
    hits = [m for m in dom.markers if m.get("class") == "hit"]
    queries = [m for m in dom.markers if m.get("class") == "query-marker"]
    assert [m["data-name"] for m in hits] == [r["name"] for r in expected["results"]]
    assert [m["data-name"] for m in queries] == [name]
    for marker, rec in zip([*hits, *queries], [*expected["results"], expected["query"]], strict=True):
        x, y = xy(*rec["footprint"]["center"])
        assert float(str(marker["cx"])) == pytest.approx(x, abs=0.06)
        assert float(str(marker["cy"])) == pytest.approx(y, abs=0.06)
    assert "5 result(s) on the map" in dom.note


@pytest.mark.browser
@NEEDS_CHROMIUM
def test_page_says_why_there_is_no_map(retrieval_index_dir: Path, tmp_path: Path) -> None:
    with _serve(retrieval_index_dir) as url:
        name = TestClient(create_app(retrieval_index_dir, embedder=None)).get("/api/random").json()["name"]
        dom = _Map()
        dom.feed(_dom(f"{url}/?name={name}&k=3", tmp_path))
    assert dom.svg.get("data-state") == "empty" and "hidden" in dom.svg
    assert dom.note.startswith("no map: the store holds no footprints"), dom.note
    assert not dom.markers
