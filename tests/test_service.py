"""The retrieval service through FastAPI's TestClient: every endpoint and every bad input."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import tifffile
from fastapi.testclient import TestClient
from PIL import Image
from safetensors.numpy import save as st_save

from benmm.retrieval.index import RetrievalIndex
from benmm.retrieval.service.app import create_app
from benmm.store import Store


@pytest.fixture(scope="module")
def client(retrieval_index_dir: Path) -> TestClient:
    return TestClient(create_app(retrieval_index_dir))


@pytest.fixture(scope="module")
def index(retrieval_index_dir: Path) -> RetrievalIndex:
    return RetrievalIndex.load(retrieval_index_dir)


@pytest.fixture(scope="module")
def store(reben_sample_root: Path) -> Store:
    return Store.open(reben_sample_root)


def npz_bytes(bands: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **bands)
    return buf.getvalue()


def zip_bytes(name: str, bands: dict[str, np.ndarray]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for band, arr in bands.items():
            tif = io.BytesIO()
            tifffile.imwrite(tif, arr)
            zf.writestr(f"{name}/{name}_{band}.tif", tif.getvalue())
        zf.writestr(f"{name}/{name}_labels_metadata.json", "{}")
    return buf.getvalue()


def upload(client: TestClient, data: bytes, filename: str, k: int = 5):  # type: ignore[no-untyped-def]
    return client.post(f"/api/search?k={k}", files={"file": (filename, data, "application/octet-stream")})


# --------------------------------------------------------------------------------------------- health
def test_health(client: TestClient, index: RetrievalIndex) -> None:
    body = client.get("/api/health").json()
    assert body["status"] == "ok" and body["kind"] == "flat" and body["metric"] == "cosine"
    assert body["items"] == len(index) == 16 and body["query_items"] == 8
    assert body["thumbnails"] is True and body["upload"] is True
    assert len(body["labels"]) == 19 and len(body["upload_bands"]) == 14 and body["max_k"] == 16


# --------------------------------------------------------------------------------------------- search by name
def test_search_archive_patch(client: TestClient, index: RetrievalIndex) -> None:
    name = str(index.names[3])
    body = client.get("/api/search", params={"name": name, "k": 5}).json()
    assert body["query"] == {
        "name": name,
        "labels": index.labels_of(name),
        "upload": False,
        "in_archive": True,
        "modality": "s1s2",  # the query side: the index's own by default
        "footprint": None,  # a reBEN LMDB store has no footprints (tests/test_map.py: one that has)
    }
    results = body["results"]
    assert [r["rank"] for r in results] == [1, 2, 3, 4, 5]
    assert name not in [r["name"] for r in results]
    assert all(r["name"] in index for r in results)
    assert [r["distance"] for r in results] == sorted(r["distance"] for r in results)
    for r in results:
        assert r["labels"] == index.labels_of(r["name"])


def test_search_query_item_and_whole_archive(client: TestClient, index: RetrievalIndex) -> None:
    assert index.extra_items is not None
    name = str(index.extra_items["name"].iloc[0])
    body = client.get("/api/search", params={"name": name, "k": 16}).json()
    assert body["query"]["in_archive"] is False and len(body["results"]) == 16
    assert {r["name"] for r in body["results"]} == set(map(str, index.names))


@pytest.mark.parametrize(
    ("params", "status", "message"),
    [
        ({"name": "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_99_99", "k": 5}, 404, "not in this index"),
        ({"k": 5}, 422, "name"),
        ({"name": "", "k": 5}, 422, "name"),
        ({"name": "x" * 300, "k": 5}, 422, "name"),
        ({"name": "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88", "k": 0}, 422, "between 1 and 16"),
        ({"name": "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88", "k": 17}, 422, "between 1 and 16"),
        ({"name": "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88", "k": -3}, 422, "between 1 and 16"),
        ({"name": "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88", "k": "ten"}, 422, "k: "),
        ({"name": "S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88", "k": 1e30}, 422, "k: "),
    ],
)
def test_search_bad_requests(client: TestClient, params: dict, status: int, message: str) -> None:  # type: ignore[type-arg]
    r = client.get("/api/search", params=params)
    assert r.status_code == status
    assert message in r.json()["detail"]


# --------------------------------------------------------------------------------------------- upload
@pytest.mark.parametrize("fmt", ["npz", "safetensors", "zip"])
def test_upload_finds_the_same_patch(
    client: TestClient, store: Store, index: RetrievalIndex, fmt: str
) -> None:
    name = str(index.names[5])
    bands = store.read_pair(name)
    data = {
        "npz": lambda: npz_bytes(bands),
        "safetensors": lambda: st_save(bands),
        "zip": lambda: zip_bytes(name, bands),
    }[fmt]()
    r = upload(client, data, f"query.{fmt}", k=3)
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["query"]["upload"] is True and body["query"]["thumbnail"].startswith("data:image/png;base64,")
    assert body["results"][0]["name"] == name
    assert body["results"][0]["distance"] == pytest.approx(0.0, abs=1e-5)


def _bands(store: Store, index: RetrievalIndex) -> dict[str, np.ndarray]:
    return store.read_pair(str(index.names[0]))


@pytest.mark.parametrize(
    ("make", "filename", "status", "message"),
    [
        (lambda b: b"hello", "query.txt", 415, "unsupported file type"),
        (lambda b: b"hello", "query", 415, "unsupported file type"),
        (lambda b: b"", "query.npz", 422, "empty"),
        (lambda b: b"PK\x03\x04 not really a zip", "query.npz", 422, "not a readable .npz"),
        (lambda b: b"\x00" * 64, "query.safetensors", 422, "not a readable .safetensors"),
        (lambda b: b"garbage", "query.zip", 422, "not a readable .zip"),
        (lambda b: npz_bytes({k: v for k, v in b.items() if k != "B05"}), "q.npz", 422, "missing bands B05"),
        (
            lambda b: npz_bytes(b | {"B05": np.zeros((120, 120), np.uint16)}),
            "q.npz",
            422,
            "B05 is 120x120, expected 60x60",
        ),
        (
            lambda b: npz_bytes(b | {"VV": np.zeros((120,), np.float32)}),
            "q.npz",
            422,
            "VV is 120, expected 120x120",
        ),
        (lambda b: npz_bytes(b | {"VH": np.full((120, 120), np.nan, np.float32)}), "q.npz", 422, "NaN"),
        (lambda b: npz_bytes(b | {"B02": np.full((120, 120), "a")}), "q.npz", 422, "dtype"),
        (lambda b: zip_bytes("p", {"B02": b["B02"]})[:0] + _readme_zip(), "q.zip", 422, "no band files"),
        (lambda b: _bomb(), "q.npz", 413, "unpacks to"),
    ],
)
def test_upload_bad_files(
    client: TestClient,
    store: Store,
    index: RetrievalIndex,
    make,
    filename: str,  # type: ignore[no-untyped-def]
    status: int,
    message: str,
) -> None:
    r = upload(client, make(_bands(store, index)), filename)
    assert r.status_code == status, r.text
    assert message in r.json()["detail"]


def _readme_zip() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("README.txt", "nothing here")
    return buf.getvalue()


def _bomb() -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("B02.npy", b"\x00" * (40 * 1024 * 1024))  # compresses to ~40 KB
    return buf.getvalue()


def test_upload_without_file_or_with_bad_k(client: TestClient, store: Store, index: RetrievalIndex) -> None:
    r = client.post("/api/search?k=5")
    assert r.status_code == 422 and "file" in r.json()["detail"]
    r = upload(client, npz_bytes(_bands(store, index)), "q.npz", k=0)
    assert r.status_code == 422 and "between 1 and 16" in r.json()["detail"]


def test_oversized_upload(retrieval_index_dir: Path, store: Store, index: RetrievalIndex) -> None:
    small = TestClient(create_app(retrieval_index_dir, max_upload_bytes=1000))
    r = upload(small, b"\x00" * 5000, "q.npz")  # > 1000 bytes, < the multipart allowance
    assert r.status_code == 413 and "larger than 1000 bytes" in r.json()["detail"]
    r = upload(small, npz_bytes(_bands(store, index)), "q.npz")  # refused from Content-Length alone
    assert r.status_code == 413 and "at most 1000 are accepted" in r.json()["detail"]


def test_upload_without_embedder_and_thumbnails_without_store(
    retrieval_index_dir: Path, store: Store, index: RetrievalIndex
) -> None:
    bare = TestClient(create_app(retrieval_index_dir, store=None, embedder=None))
    health = bare.get("/api/health").json()
    assert health["upload"] is False and health["thumbnails"] is False
    r = upload(bare, npz_bytes(_bands(store, index)), "q.npz")
    assert r.status_code == 400 and "cannot embed" in r.json()["detail"]
    r = bare.get(f"/api/patch/{index.names[0]}.png")
    assert r.status_code == 404 and "no thumbnails" in r.json()["detail"]


def test_broken_store_or_checkpoint_paths_degrade_cleanly(retrieval_index_dir: Path, tmp_path: Path) -> None:
    app = create_app(retrieval_index_dir, store=str(tmp_path / "nostore"), embedder=str(tmp_path / "no.ckpt"))
    health = TestClient(app).get("/api/health").json()
    assert health["thumbnails"] is False and "cannot be opened" in health["thumbnails_note"]
    assert health["upload"] is False and "no.ckpt" in health["upload_note"]


# --------------------------------------------------------------------------------------------- thumbnails
def test_patch_png(client: TestClient, index: RetrievalIndex) -> None:
    name = str(index.names[0])
    r = client.get(f"/api/patch/{name}.png")
    assert r.status_code == 200 and r.headers["content-type"] == "image/png"
    s2 = np.asarray(Image.open(io.BytesIO(r.content)))
    assert s2.shape == (120, 120, 3) and s2.std() > 1
    s1 = np.asarray(Image.open(io.BytesIO(client.get(f"/api/patch/{name}.png?mode=s1").content)))
    assert s1.shape == (120, 120, 3) and not np.array_equal(s1, s2)
    small = Image.open(io.BytesIO(client.get(f"/api/patch/{name}.png?size=48").content))
    assert small.size == (48, 48)
    assert index.extra_items is not None  # query items have thumbnails too
    assert client.get(f"/api/patch/{index.extra_items['name'].iloc[0]}.png").status_code == 200


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/api/patch/S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_99_99.png", 404, "not in this index"),
        ("/api/patch/..%2F..%2Fetc%2Fpasswd.png", 404, "Not Found"),  # no route: never a file read
        ("/api/patch/S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88.png?mode=rgb", 422, "mode must be"),
        ("/api/patch/S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88.png?size=4000", 422, "size must be"),
        ("/api/patch/S2A_MSIL2A_20170613T101031_N9999_R022_T33UUP_37_88.png?size=x", 422, "size: "),
    ],
)
def test_patch_png_bad_requests(client: TestClient, path: str, status: int, message: str) -> None:
    r = client.get(path)
    assert r.status_code == status
    assert message in r.json()["detail"]


# --------------------------------------------------------------------------------------------- names, page
def test_names_and_random(client: TestClient, index: RetrievalIndex) -> None:
    body = client.get("/api/names", params={"q": "37_8", "limit": 3}).json()
    assert body["total"] == 24 and 1 <= len(body["names"]) <= 3
    assert all("37_8" in n for n in body["names"])
    assert client.get("/api/names", params={"q": "no-such-patch"}).json()["names"] == []
    assert client.get("/api/names", params={"limit": 0}).status_code == 422
    assert client.get("/api/random").json()["name"] in index


def test_web_page_and_static_files(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and "text/html" in page.headers["content-type"]
    assert (
        '<script src="/static/app.js">' in page.text
        and "http" not in page.text.split("<body>")[1].split("</footer>")[0]
    )  # no CDN or external resource
    for asset, kind in (("app.js", "javascript"), ("style.css", "css")):
        r = client.get(f"/static/{asset}")
        assert r.status_code == 200 and kind in r.headers["content-type"]
    assert client.get("/static/nothing.js").status_code == 404


def test_embedder_of_the_wrong_dimension_is_refused(retrieval_index_dir: Path) -> None:
    class Wrong:
        bands = ("B02",)
        dim = 3

        def __call__(self, bands: object) -> np.ndarray:
            return np.zeros((1, 3), np.float32)

    health = TestClient(create_app(retrieval_index_dir, embedder=Wrong())).get("/api/health").json()
    assert health["upload"] is False and "3-d embeddings" in health["upload_note"]
