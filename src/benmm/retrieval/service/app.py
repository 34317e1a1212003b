"""The retrieval service: a FastAPI app over a saved index, and the web page (``benmm serve``).

Endpoints (JSON unless said otherwise; every user error is a 4xx with ``{"detail": "<message>"}``):

* ``GET  /api/health`` — index kind, size, label set, whether thumbnails and uploads are available
* ``GET  /api/search?name=PATCH&k=20&modality=s1`` — results for a patch of the index (archive or query
  items); ``modality`` = the query side (default: the index's own; another side is read from the store and
  embedded with the index's model, :mod:`benmm.retrieval.query`)
* ``POST /api/search?k=20&modality=s1`` — results for an uploaded patch (multipart field ``file``; ``.npz``,
  ``.safetensors`` or a zipped v1 patch folder, see :mod:`benmm.retrieval.service.upload`), embedded with the
  index's checkpoint on the query side (an S1-only VV/VH patch searches an S2 index of a cross-modal model)
* ``GET  /api/patch/{name}.png?mode=s2|s1&size=120`` — S2 true-colour / S1 false-colour thumbnail
* ``GET  /api/names?q=TEXT&limit=20`` — names containing TEXT (the page's patch picker);
  ``GET /api/random`` — a random patch name
* ``GET  /`` — the web page (``static/``: plain HTML/JS/CSS shipped in the package, no CDN; ``map.js``
  draws the query and its results on an outline of Europe, ``europe.json``, see ``static/ATTRIBUTION.md``)

Each hit record and the query carry ``footprint`` (``{"bbox": [lon_min, lat_min, lon_max, lat_max],
"center": [lon, lat]}``, WGS84) where the store holds footprints (:mod:`benmm.retrieval.service.places`),
else None.

The app needs FastAPI (the ``serve`` extra); everything else comes from the index directory: its
manifest names the store (thumbnails) and the checkpoint (embedding uploads).
"""

# no `from __future__ import annotations` here: FastAPI resolves the endpoint annotations at runtime
import base64
import json
import random
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from pathlib import Path
from threading import Lock
from typing import Any, Final, Protocol

import numpy as np

from benmm import __version__
from benmm.errors import BenmmError, RetrievalError
from benmm.render import MODES, RenderError, png_bytes, render
from benmm.retrieval.index import RetrievalIndex
from benmm.retrieval.query import QuerySides, index_side
from benmm.retrieval.service.places import Places
from benmm.retrieval.service.upload import MAX_UPLOAD_BYTES, UploadError, read_patch_bytes

STATIC_DIR: Final = Path(__file__).parent / "static"
MAX_K: Final = 1000
THUMB_SIZES: Final = (32, 480)
THUMB_CACHE: Final = 1024


class PatchSource(Protocol):
    """Where thumbnails come from (a :class:`benmm.store.reader.Store` fits)."""

    def read_pair(self, name: str) -> dict[str, np.ndarray]: ...

    def __contains__(self, name: object) -> bool: ...


class Embedder(Protocol):
    """Turns one patch (bands by name, native sizes) into a float embedding ``[1, D]``."""

    bands: tuple[str, ...]

    def __call__(self, bands: Mapping[str, np.ndarray]) -> np.ndarray: ...


def _missing_fastapi() -> RetrievalError:
    return RetrievalError("the service needs FastAPI and uvicorn: pip install 'benmm[serve]'")


def _open_store(path: str | None) -> tuple[PatchSource | None, str | None]:
    if not path:
        return None, "the index names no store (build it from `benmm embed` output to get thumbnails)"
    try:
        from benmm.store import Store

        return Store.open(path), None
    except (BenmmError, OSError) as exc:
        return None, f"store {path} cannot be opened ({_one_line(exc)}); serve with --store PATH"


def _open_embedder(
    path: str | None, source: Mapping[str, Any] | None = None, modality: str | None = None
) -> tuple[Embedder | None, str | None]:
    from benmm.retrieval.embed import BAND_STATS, BandStatsEmbedder

    if (source or {}).get("embedder") == BAND_STATS:
        model = (source or {}).get("model") or {}
        return BandStatsEmbedder(tuple(model.get("bands") or ())) if model.get(
            "bands"
        ) else BandStatsEmbedder(), None
    if not path:
        return None, "the index names no checkpoint, so uploads cannot be embedded"
    try:
        from benmm.retrieval.embed import CheckpointEmbedder

        sides = ((source or {}).get("model") or {}).get("modalities") or [modality]
        return CheckpointEmbedder(path, modality=modality if modality in sides else None), None
    except (BenmmError, OSError) as exc:
        return None, f"checkpoint {path} cannot be loaded ({_one_line(exc)}); serve with --checkpoint PATH"


def _one_line(exc: BaseException, width: int = 200) -> str:
    """The first line of an error (torch's unpickling errors run to a page), shortened."""
    text = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    return text if len(text) <= width else text[: width - 3] + "..."


class BodyLimit:
    """ASGI middleware bounding every POST body to ``max_bytes`` as it arrives: a declared
    Content-Length over the limit is refused at once, and a chunked body (no Content-Length) is counted
    chunk by chunk and cut off at the limit, so no more than the limit is ever read into the parsers.
    The answer is then 413, whatever the application made of the truncated body."""

    def __init__(self, app: Any, max_bytes: int, slack: int = 65536) -> None:
        self.app, self.max_bytes, self.slack = app, max_bytes, slack  # slack: multipart headers

    async def _refuse(self, send: Any, detail: str) -> None:
        body = json.dumps({"detail": detail}).encode()
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()), (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope.get("method") != "POST":
            await self.app(scope, receive, send)
            return
        limit = self.max_bytes + self.slack
        declared = dict(scope.get("headers") or []).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            await self._refuse(send, f"the upload is {int(declared)} bytes; at most {self.max_bytes} are "
                                     "accepted")
            return
        state = {"read": 0, "over": False, "started": False}

        async def bounded_receive() -> Any:
            if state["over"]:
                return {"type": "http.request", "body": b"", "more_body": False}
            message = await receive()
            if message["type"] == "http.request":
                state["read"] += len(message.get("body", b""))
                if state["read"] > limit:  # stop reading: the parser sees the body end here
                    state["over"] = True
                    return {"type": "http.request", "body": b"", "more_body": False}
            return message

        async def guarded_send(message: Any) -> None:
            if state["over"]:  # whatever the app answered to the truncated body: 413, once
                if message["type"] == "http.response.start" and not state["started"]:
                    state["started"] = True
                    await self._refuse(send, f"the upload is larger than {self.max_bytes} bytes, the limit")
                return
            await send(message)

        await self.app(scope, bounded_receive, guarded_send)


class _PngCache:
    """A small thread-safe LRU of rendered thumbnails (result grids ask for the same patches often)."""

    def __init__(self, size: int = THUMB_CACHE) -> None:
        self.size, self.lock, self.data = size, Lock(), OrderedDict[tuple[str, str, int], bytes]()

    def get(self, key: tuple[str, str, int], make: Callable[[], bytes]) -> bytes:
        with self.lock:
            if key in self.data:
                self.data.move_to_end(key)
                return self.data[key]
        value = make()
        with self.lock:
            self.data[key] = value
            while len(self.data) > self.size:
                self.data.popitem(last=False)
        return value


def create_app(
    index: RetrievalIndex | str | Path,
    store: PatchSource | str | None = "auto",
    embedder: Embedder | str | None = "auto",
    max_upload_bytes: int = MAX_UPLOAD_BYTES,
    max_k: int = MAX_K,
) -> Any:
    """The FastAPI app. ``store`` / ``embedder`` = ``"auto"`` take them from the index manifest."""
    try:
        from fastapi import FastAPI, File, HTTPException, Query, Request, UploadFile
        from fastapi.exceptions import RequestValidationError
        from fastapi.responses import FileResponse, JSONResponse, Response
        from fastapi.staticfiles import StaticFiles
        from starlette.concurrency import run_in_threadpool
    except ImportError:  # pragma: no cover - depends on the installed extras
        raise _missing_fastapi() from None

    ix = index if isinstance(index, RetrievalIndex) else RetrievalIndex.load(index)
    src = ix.source
    store_note = emb_note = None
    if store == "auto":
        store, store_note = _open_store(src.get("store"))
    elif isinstance(store, str):
        store, store_note = _open_store(store)
    if embedder == "auto":
        embedder, emb_note = _open_embedder(src.get("checkpoint"), src, index_side(ix))
    elif isinstance(embedder, str):
        embedder, emb_note = _open_embedder(embedder, None, index_side(ix))
    emb_dim = getattr(embedder, "dim", ix.dim)
    if embedder is not None and emb_dim != ix.dim:
        embedder, emb_note = None, f"the checkpoint makes {emb_dim}-d embeddings, the index expects {ix.dim}"
    sides = QuerySides(ix, embedder, emb_note)
    k_limit = max(1, min(max_k, len(ix)))
    "" in ix  # noqa: B015 - builds the name -> row maps now, not during the first request
    pngs = _PngCache()
    places, places_note = Places.of_store(store)  # footprints for the hit records and the page's map
    all_names: list[str] = list(ix.names) + ([] if ix.extra_items is None else list(ix.extra_items["name"]))

    app = FastAPI(title="benmm retrieval", version=__version__, docs_url="/api/docs", redoc_url=None)
    app.state.notes = {"thumbnails": store_note, "uploads": emb_note}  # what is off, and why (one line each)

    app.add_middleware(BodyLimit, max_bytes=max_upload_bytes)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        parts = []
        for err in exc.errors():
            loc = ".".join(str(x) for x in err.get("loc", ()) if x not in ("query", "body", "path"))
            parts.append(f"{loc or 'request'}: {err.get('msg', 'invalid')}")
        return JSONResponse({"detail": "; ".join(parts)}, status_code=422)

    def check_k(k: int) -> int:
        if not 1 <= k <= k_limit:
            raise HTTPException(
                422, f"k must be between 1 and {k_limit} (this index holds {len(ix)} items), got {k}"
            )
        return k

    def response(
        query: dict[str, Any], dist: np.ndarray, idx: np.ndarray, k: int, t0: float
    ) -> dict[str, Any]:
        hits = ix.hits(dist[0], idx[0])
        for record in (query, *hits):
            known = places is not None and not record.get("upload")
            record["footprint"] = places.get(record["name"]) if places is not None and known else None
        return {
            "query": query,
            "k": k,
            "kind": ix.kind,
            "metric": ix.manifest.get("metric"),
            "archive_modality": sides.side,
            "results": hits,
            "took_ms": round((time.perf_counter() - t0) * 1e3, 3),
        }

    @app.get("/api/health")
    def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "benmm": __version__,
            "kind": ix.kind,
            "metric": ix.manifest.get("metric"),
            "items": len(ix),
            "query_items": len(all_names) - len(ix),
            "dim": ix.dim,
            "bits": ix.bits,
            "labels": list(ix.label_names),
            "max_k": k_limit,
            "max_upload_bytes": max_upload_bytes,
            "thumbnails": store is not None,
            "thumbnails_note": store_note,
            "upload": embedder is not None,
            "upload_note": emb_note,
            "upload_bands": list(embedder.bands) if embedder is not None else [],
            "footprints": 0 if places is None else len(places),
            "footprints_note": places_note,
            **sides.describe(),
        }

    @app.get("/api/search")
    def search_name(name: str = Query(..., min_length=1, max_length=200), k: int = 20,
                    modality: str | None = Query(None, max_length=8)) -> dict[str, Any]:
        t0 = time.perf_counter()
        check_k(k)
        name = name.strip()
        if name not in ix:
            raise HTTPException(404, f"patch {name!r} is not in this index; pick a name from /api/names")
        try:
            side, dist, idx = sides.search_name(name, modality, k, store, store_note)
        except RetrievalError as exc:
            raise HTTPException(getattr(exc, "status", 422), str(exc)) from None
        query = {
            "name": name,
            "labels": ix.labels_of(name),
            "upload": False,
            "in_archive": ix.position(name) is not None,
            "modality": side,
        }
        return response(query, dist, idx, k, t0)

    @app.post("/api/search")
    async def search_upload(request: Request, file: UploadFile = File(...), k: int = 20,
                            modality: str | None = Query(None, max_length=8)) -> dict[str, Any]:
        t0 = time.perf_counter()
        check_k(k)
        data = await file.read(max_upload_bytes + 1)

        def work() -> dict[str, Any]:  # decoding, embedding, search, PNG: off the event loop
            try:
                if len(data) > max_upload_bytes:
                    raise UploadError(f"the file is larger than {max_upload_bytes} bytes, the upload limit",
                                      413)
                bands = read_patch_bytes(data, file.filename or "", max_bytes=max_upload_bytes)
                if embedder is None:
                    raise UploadError(f"this service cannot embed uploaded patches: {emb_note}", 400)
                side, dist, idx = sides.search_bands(bands, modality, k, f"the upload {file.filename}")
            except UploadError as exc:
                raise HTTPException(exc.status, str(exc)) from None
            except RetrievalError as exc:
                raise HTTPException(422, str(exc)) from None
            try:
                rgb = render(bands, "s1" if side == "s1" else "s2")
                thumb = "data:image/png;base64," + base64.b64encode(png_bytes(rgb, 120)).decode()
            except RenderError:
                thumb = None
            query: dict[str, Any] = {"name": file.filename, "labels": [], "upload": True, "thumbnail": thumb,
                                     "modality": side}
            return response(query, dist, idx, k, t0)

        result: dict[str, Any] = await run_in_threadpool(work)
        return result

    @app.get("/api/patch/{name}.png")
    def patch_png(name: str, mode: str = "s2", size: int = 120) -> Response:
        if mode not in MODES:
            raise HTTPException(422, f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if not THUMB_SIZES[0] <= size <= THUMB_SIZES[1]:
            raise HTTPException(422, f"size must be between {THUMB_SIZES[0]} and {THUMB_SIZES[1]} pixels")
        if name not in ix:
            raise HTTPException(404, f"patch {name!r} is not in this index")
        if store is None:
            raise HTTPException(404, f"no thumbnails: {store_note}")
        if name not in store:
            raise HTTPException(404, f"patch {name!r} is not in the store {src.get('store')}")
        try:
            png = pngs.get((name, mode, size), lambda: png_bytes(render(store.read_pair(name), mode), size))
        except BenmmError as exc:
            raise HTTPException(422, f"patch {name!r} cannot be rendered: {exc}") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "max-age=3600"})

    @app.get("/api/names")
    def names(q: str = Query("", max_length=200), limit: int = Query(20, ge=1, le=200)) -> dict[str, Any]:
        needle = q.strip().lower()
        found = [n for n in all_names if needle in n.lower()][:limit] if needle else all_names[:limit]
        return {"names": found, "total": len(all_names)}

    @app.get("/api/random")
    def random_name() -> dict[str, str]:
        return {"name": random.choice(all_names)}

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", media_type="text/html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.state.index = ix
    return app


def serve(
    index: str | Path, host: str = "127.0.0.1", port: int = 8000, search_threads: int = 1,
    announce: Callable[[dict[str, str | None]], None] | None = None, **kwargs: Any
) -> None:
    """Run the app with uvicorn (blocks).

    ``search_threads`` = FAISS OpenMP threads per search. The server already runs requests concurrently
    (one worker thread each), so one thread per search is the default: several multi-threaded searches at
    once oversubscribe the cores, and OpenMP's spinning barriers then cost far more than they gain
    (measured: 1-query binary search at 590k items, 3-6 ms with 1 thread vs 150-190 ms with 2 threads on a
    busy 2-core machine). Raise it for a single user on a many-core machine with a large float index.
    ``announce(notes)`` is called once the index is loaded and the port is free, just before serving
    (``notes``: what is switched off, e.g. thumbnails without a store, and why).
    """
    try:
        import uvicorn
    except ImportError:  # pragma: no cover
        raise _missing_fastapi() from None
    import faiss

    faiss.omp_set_num_threads(max(1, search_threads))
    app = create_app(index, **kwargs)  # a bad index fails here, before anything is announced
    check_port(host, port)
    if announce is not None:
        announce(dict(app.state.notes))
    uvicorn.run(app, host=host, port=port, log_level="warning")


def check_port(host: str, port: int) -> None:
    """Refuse a port that is taken (or a host that is not this machine's) before the server starts."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as exc:
        raise RetrievalError(f"cannot listen on {host}: {exc.strerror or exc}") from None
    family, _, _, _, address = infos[0]
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        try:
            sock.bind(address)
        except OSError as exc:
            raise RetrievalError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another server "
                                 "running there? choose another --port") from None
