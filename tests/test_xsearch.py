"""Cross-modal search: a query of one side (S1) against an index of the other (S2) of a tiny cross-modal
model, through `benmm search --query-modality`, the service's ``modality`` parameter, and the web page;
and every refusal (a side the model lacks, a file without the side's bands, another code length or size)."""

from __future__ import annotations

import io
import json
import re
import subprocess
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from benmm.cli.app import app
from benmm.errors import RetrievalError
from benmm.retrieval.build import build_index, index_from_embeddings
from benmm.retrieval.embed import CheckpointEmbedder, embed_store
from benmm.retrieval.index import RetrievalIndex
from benmm.retrieval.query import QuerySides
from benmm.retrieval.service.app import create_app
from benmm.store import Store

if TYPE_CHECKING:
    from conftest import Synthetic

TINY = ['model.name="kbranch"', "model.width=4", "model.embed=16", "model.downsample=4", "model.bits=16",
        "batch_size=16", "epochs=1", "log_every_n_steps=1", "data.augment=false"]
runner = CliRunner()


@pytest.fixture(scope="module")
def xm(synthetic: Synthetic, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A cross-modal (labels) model trained two steps on 40 synthetic pairs, and a flat index of its S2
    embeddings (archive = train, the rest look-up-only query items)."""
    from benmm.train.fit import train

    store = synthetic.archive(pairs=40, seed=4, layout="reben")
    root = tmp_path_factory.mktemp("xsearch")
    run = train(store, root / "run", recipe="cross-modal", overrides=TINY, workers=0, progress=False,
                limit_train_batches=2, limit_val_batches=1, export=False)
    embed_store(run.best, store, root / "s2", modality="s2", recommended=False)
    index = index_from_embeddings(root / "s2", kind="flat", archive_split="train").save(root / "index")
    return {"store": store, "ckpt": run.best, "index": index, "ix": RetrievalIndex.load(index)}


def _search(*args: str) -> Any:
    res = runner.invoke(app, ["search", *args])
    return res


def _npz(bands: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **bands)
    return buf.getvalue()


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_s1_query_searches_the_s2_index(xm: dict[str, Any], tmp_path: Path) -> None:
    ix: RetrievalIndex = xm["ix"]
    name = str(ix.names[2])
    res = _search(str(xm["index"]), "--name", name, "--query-modality", "s1", "-k", "5", "--json")
    assert res.exit_code == 0, res.output
    body = json.loads(res.output)
    assert body["query_modality"] == "s1" and body["archive_modality"] == "s2"
    got = [h["name"] for h in body["results"]]
    # the same ranking as the model's S1 embedding of the patch's VV/VH searched in the S2 index by hand
    s1 = CheckpointEmbedder(xm["ckpt"], modality="s1")
    assert s1.bands == ("VV", "VH")
    pair = Store.open(xm["store"]).read_pair(name)
    _, idx = ix.search(s1({b: pair[b] for b in s1.bands}), 6)
    expected = [str(ix.names[i]) for i in idx[0] if ix.names[i] != name][:5]
    assert got == expected and name not in got  # its own S2 pair is left out
    # the default is the index's own side: the stored S2 vector, as before
    own = json.loads(_search(str(xm["index"]), "--name", name, "-k", "5", "--json").output)
    _, i = ix.search_name(name, 5)
    assert own["query_modality"] == "s2" and [h["name"] for h in own["results"]] == [str(ix.names[j])
                                                                                    for j in i[0]]
    # a file holding only VV and VH: the same S1 query (its own pair may appear, the rest is the same)
    path = tmp_path / "s1.npz"
    path.write_bytes(_npz({b: pair[b] for b in ("VV", "VH")}))
    res = _search(str(xm["index"]), "--patch", str(path), "--query-modality", "s1", "-k", "6", "--json")
    assert res.exit_code == 0, res.output
    assert [h["name"] for h in json.loads(res.output)["results"] if h["name"] != name][:5] == got
    table = _search(str(xm["index"]), "--name", name, "--query-modality", "s1", "-k", "3")
    assert table.exit_code == 0 and "S1 -> S2" in table.output


def test_cli_bad_query_sides(xm: dict[str, Any], retrieval_index_dir: Path, tmp_path: Path) -> None:
    ix: RetrievalIndex = xm["ix"]
    name = str(ix.names[0])
    pair = Store.open(xm["store"]).read_pair(name)
    s2_only = tmp_path / "s2.npz"
    s2_only.write_bytes(_npz({b: v for b, v in pair.items() if b not in ("VV", "VH")}))
    cases = [
        (["--name", name, "--query-modality", "s3"], "unknown query modality 's3': choose s1 or s2 or s1s2"),
        (["--patch", str(s2_only), "--query-modality", "s1"], "missing bands VV, VH of the s1 query side"),
        (["--patch", str(s2_only), "--query-modality", "s1s2"], "choose query modality s2"),
    ]
    for args, message in cases:
        res = _search(str(xm["index"]), *args)
        assert res.exit_code == 2, res.output
        out = " ".join(res.output.split())  # the console wraps long lines
        assert message in out and "Traceback" not in out and "for this s2 index" in out, out
    # a band-statistics index takes queries of its own side only, and says why
    bs = RetrievalIndex.load(retrieval_index_dir)
    res = _search(str(retrieval_index_dir), "--name", str(bs.names[0]), "--query-modality", "s1")
    out = " ".join(res.output.split())
    assert res.exit_code == 2 and "s1 queries cannot search this s1s2 index" in out, out
    assert "band statistics of one side are not comparable" in out
    assert len(res.output.strip().splitlines()) <= 3


def test_classifier_index_and_mismatched_codes_or_sizes(xm: dict[str, Any]) -> None:
    """A classifier's index has only its own side; a query embedder of another size or code length is
    refused naming both sides."""
    rng = np.random.default_rng(0)
    items = xm["ix"].items.copy()
    clf = build_index(rng.normal(size=(len(items), 8)).astype(np.float32), items, kind="flat",
                      source={"modality": "s2", "model": {"name": "resnet18", "modality": "s2"}})
    sides = QuerySides(clf, None, "the index names no checkpoint")
    assert sides.sides == ("s2",) and sides.resolve(None) == "s2"
    with pytest.raises(RetrievalError, match=r"s1 queries cannot search this s2 index: its model "
                                             r"\(resnet18\) takes s2 queries; .*embeds only s2 patches"):
        sides.resolve("s1")

    class Fake:
        name, modalities, bands = "other", ("s1", "s2"), ("VV", "VH")

        def __init__(self, dim: int, bits: int | None, modality: str = "s1") -> None:
            self.dim, self.code_bits, self.modality = dim, bits, modality

        def __call__(self, bands: object) -> np.ndarray:
            return np.ones((1, self.dim), np.float32)

    xs = QuerySides(xm["ix"], Fake(8, 16, "s2"), open_side=lambda m: Fake(16, 32, m))
    with pytest.raises(RetrievalError, match=r"s1 queries from model other make 32-bit codes but the s2 "
                                             r"index holds 16-bit codes"):
        xs.embedder("s1")
    with pytest.raises(RetrievalError, match=r"s2 queries from model other are 8-d but the s2 index expects "
                                             r"16-d embeddings"):
        xs.embedder("s2")


# ------------------------------------------------------------------------------------------------ service
@pytest.fixture(scope="module")
def client(xm: dict[str, Any]) -> TestClient:
    return TestClient(create_app(xm["index"]))


def test_service_health_and_cross_modal_search(client: TestClient, xm: dict[str, Any]) -> None:
    health = client.get("/api/health").json()
    assert health["archive_modality"] == "s2" and health["query_modalities"] == ["s1", "s2", "s1s2"]
    assert health["query_modalities_note"] is None and health["upload"] is True
    ix: RetrievalIndex = xm["ix"]
    name = str(ix.names[2])
    body = client.get("/api/search", params={"name": name, "k": 5, "modality": "s1"}).json()
    cli = json.loads(_search(str(xm["index"]), "--name", name, "--query-modality", "s1", "-k", "5",
                             "--json").output)
    assert body["query"]["modality"] == "s1" and body["archive_modality"] == "s2"
    assert [r["name"] for r in body["results"]] == [h["name"] for h in cli["results"]]
    # an uploaded S1-only patch (VV, VH) retrieves S2 patches of the archive
    pair = Store.open(xm["store"]).read_pair(name)
    s1_only = _npz({b: pair[b] for b in ("VV", "VH")})
    r = client.post("/api/search?k=6&modality=s1", files={"file": ("q.npz", s1_only)})
    assert r.status_code == 200, r.text
    up = r.json()
    assert up["query"]["modality"] == "s1" and up["query"]["thumbnail"].startswith("data:image/png")
    assert [h["name"] for h in up["results"] if h["name"] != name][:5] == [h["name"] for h in cli["results"]]
    assert all(h["name"] in set(ix.names) for h in up["results"])
    for mode in ("s1", "s2"):  # both thumbnails of a result
        png = client.get(f"/api/patch/{up['results'][0]['name']}.png", params={"mode": mode})
        assert png.status_code == 200 and png.content[:4] == b"\x89PNG"


def test_service_bad_query_sides(client: TestClient, xm: dict[str, Any], retrieval_index_dir: Path) -> None:
    name = str(xm["ix"].names[0])
    pair = Store.open(xm["store"]).read_pair(name)
    s1_only = _npz({b: pair[b] for b in ("VV", "VH")})
    r = client.post("/api/search?k=3", files={"file": ("q.npz", s1_only)})  # default side: the index's S2
    assert r.status_code == 422
    detail = r.json()["detail"]
    assert "missing bands B01" in detail and "of the s2 query side" in detail
    assert "(it holds S1 bands only) for this s2 index; choose query modality s1" in detail
    r = client.get("/api/search", params={"name": name, "k": 3, "modality": "sar"})
    assert r.status_code == 422 and "unknown query modality 'sar'" in r.json()["detail"]
    bs = TestClient(create_app(retrieval_index_dir))
    health = bs.get("/api/health").json()
    assert health["query_modalities"] == ["s1s2"] and "band statistics" in health["query_modalities_note"]
    r = bs.get("/api/search", params={"name": str(RetrievalIndex.load(retrieval_index_dir).names[0]),
                                      "k": 3, "modality": "s1"})
    assert r.status_code == 422 and "s1 queries cannot search this s1s2 index" in r.json()["detail"]


# ------------------------------------------------------------------------------------------------ page
@pytest.mark.browser
def test_page_cross_modal_search(xm: dict[str, Any], tmp_path: Path) -> None:
    """Choose S1 (the page's ?modality=s1), search by name: the cards are S2 archive patches, each with
    both thumbnails."""
    import shutil
    import socket

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (apt-get install chromium)"
    import threading

    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    # uvicorn in a thread of this process (the app is built here: no second start-up of torch and the model)
    server = uvicorn.Server(uvicorn.Config(create_app(xm["index"]), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while not server.started:
            assert thread.is_alive() and time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        name = str(xm["ix"].names[2])
        expected = httpx.get(f"{url}/api/search", params={"name": name, "k": 4, "modality": "s1"}).json()
        run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                              "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                              "--virtual-time-budget=15000", "--dump-dom",
                              f"{url}/?name={name}&k=4&modality=s1"],
                             capture_output=True, text=True, timeout=120, check=False)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    dom = run.stdout
    assert run.returncode == 0 and 'data-state="done"' in dom, dom[-3000:]
    assert 'data-query-modality="s1"' in dom  # the picker chose S1
    cards = re.findall(r'<div class="card result" data-name="([^"]+)"', dom)
    assert cards == [r["name"] for r in expected["results"]] and len(cards) == 4
    for card in cards:  # both modalities of every result
        for mode in ("s2", "s1"):
            assert f'src="/api/patch/{card}.png?mode={mode}&amp;size=120"' in dom
    assert "S1 query → S2 archive" in dom
    query_card = dom.split('id="query-card"')[1].split("</div>")[0]
    assert f'src="/api/patch/{name}.png?mode=s1&amp;size=120"' in query_card  # the query's own side
    picker = dom.split('id="query-modality"')[1].split("</select>")[0]
    assert '<option value="s1">S1' in picker and "disabled" not in picker  # a cross-modal model: all sides


@pytest.mark.browser
def test_page_disables_sides_the_model_lacks(retrieval_server: str, tmp_path: Path) -> None:
    """A band-statistics index: only its own side is enabled, and the page says why in one line."""
    import shutil

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "chromium is not installed (apt-get install chromium)"
    run = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                          "--disable-dev-shm-usage", f"--user-data-dir={tmp_path / 'profile'}",
                          "--virtual-time-budget=10000", "--dump-dom", f"{retrieval_server}/"],
                         capture_output=True, text=True, timeout=120, check=False)
    dom = run.stdout
    assert run.returncode == 0 and 'data-state="ready"' in dom, dom[-3000:]
    picker = dom.split('id="query-modality"')[1].split("</select>")[0]
    assert re.search(r'<option value="s1" disabled="">', picker) and '<option value="s1s2">S1 + S2' in picker
    note = re.search(r'<div id="modality-note" class="muted">([^<]+)</div>', dom)
    assert note and "band statistics of one side are not comparable" in note.group(1)
