"""A bounded load test of `benmm serve` on loopback: 2,000 searches from 16 concurrent clients, one in
ten of them an upload of a patch file (decoded and embedded in the server's thread pool).

The test asserts zero errors only (latency is machine-dependent and goes in the printed summary, not in
an assertion). It stops by itself: a fixed number of requests and a wall-clock deadline.
"""

from __future__ import annotations

import asyncio
import random
import time
from pathlib import Path

import httpx
import numpy as np
import pytest

REQUESTS = 2000
CLIENTS = 16
DEADLINE_S = 120.0


async def _load(
    url: str,
    names: list[str],
    max_k: int,
    requests: int,
    clients: int,
    deadline_s: float,
    archive: int | None = None,
    upload: bytes | None = None,
) -> dict[str, float | int]:
    """Run ``requests`` searches (random name, random k in 1..max_k) from ``clients`` concurrent clients.

    A response counts as an error unless it is 200 with ``min(k, archive - in_archive)`` results
    (``archive`` = the index size, default ``max_k``; an archive query is left out of its own results).
    """
    archive = max_k if archive is None else archive
    rng = random.Random(0)
    plan = [(rng.choice(names), rng.randint(1, max_k), upload is not None and i % 10 == 9)
            for i in range(requests)]
    latencies: list[float] = []
    errors: list[str] = []
    next_job = 0
    stop = time.monotonic() + deadline_s

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal next_job
        while next_job < len(plan) and time.monotonic() < stop:
            name, k, is_upload = plan[next_job]
            next_job += 1
            t0 = time.perf_counter()
            try:
                if is_upload:
                    r = await http.post("/api/search", params={"k": k},
                                        files={"file": ("query.npz", upload or b"")})
                else:
                    r = await http.get("/api/search", params={"name": name, "k": k})
                # an archive query is left out of its own results: one fewer when k = the archive size
                body = r.json() if r.status_code == 200 else {}
                own = 0 if is_upload else body.get("query", {}).get("in_archive", 0)
                ok = bool(body) and len(body["results"]) == min(k, archive - own)
                if not ok:
                    errors.append(f"{r.status_code} {r.text[:200]}")
            except httpx.HTTPError as exc:
                errors.append(repr(exc))
            latencies.append(time.perf_counter() - t0)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    t0 = time.perf_counter()
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as http:
        await asyncio.gather(*(client(http) for _ in range(clients)))
    wall = time.perf_counter() - t0
    lat = np.array(latencies) * 1e3
    return {
        "requests": len(latencies),
        "errors": len(errors),
        "first_error": errors[0] if errors else "",
        "wall_s": wall,
        "rps": len(latencies) / wall,
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "max_ms": float(lat.max()),
    }


def _npz_of(store_root: Path, name: str) -> bytes:
    import io

    from benmm.store import Store

    buf = io.BytesIO()
    np.savez(buf, **Store.open(store_root).read_pair(name))
    return buf.getvalue()


@pytest.mark.slow
def test_load_zero_errors(retrieval_server: str, reben_sample_root: Path) -> None:
    health = httpx.get(f"{retrieval_server}/api/health").json()
    assert health["upload"], health["upload_note"]
    names = httpx.get(f"{retrieval_server}/api/names", params={"limit": 200}).json()["names"]
    upload = _npz_of(reben_sample_root, names[0])
    stats = asyncio.run(_load(retrieval_server, names, health["max_k"], REQUESTS, CLIENTS, DEADLINE_S,
                              upload=upload))
    print(
        f"\nload: {stats['requests']} searches (1 in 10 an upload), {CLIENTS} clients, "
        f"{stats['wall_s']:.1f} s, "
        f"{stats['rps']:.0f} req/s, p50 {stats['p50_ms']:.1f} ms, p99 {stats['p99_ms']:.1f} ms, "
        f"max {stats['max_ms']:.1f} ms, errors {stats['errors']}"
    )
    assert stats["errors"] == 0, stats["first_error"]
    assert stats["requests"] == REQUESTS, "the deadline stopped the run before every request was sent"
