"""The service bounds a chunked body as it arrives, and a slow upload never blocks other requests
(decoding runs in the thread pool). A real uvicorn server in a thread, on a free port."""

from __future__ import annotations

import contextlib
import select
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from benmm.retrieval.service import app as service
from benmm.retrieval.service.upload import UploadError


@contextlib.contextmanager
def _serve(app: Any) -> Iterator[tuple[str, int]]:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield "127.0.0.1", port
    finally:
        server.should_exit = True
        thread.join(10)


@pytest.fixture()
def small_limit(retrieval_index_dir: Path) -> Iterator[tuple[str, int]]:
    with _serve(service.create_app(retrieval_index_dir, max_upload_bytes=1000)) as address:
        yield address


def test_a_chunked_oversize_body_is_cut_off_at_the_limit(small_limit: tuple[str, int]) -> None:
    host, port = small_limit
    sent, answer = 0, b""
    chunk = b"x" * 65536
    with socket.create_connection((host, port), timeout=10) as sock:
        sock.sendall(b"POST /api/search?k=3 HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
                     b"Content-Type: multipart/form-data; boundary=b\r\n\r\n")
        part = (b'--b\r\nContent-Disposition: form-data; name="file"; filename="q.npz"\r\n'
                b"Content-Type: application/octet-stream\r\n\r\n")  # then a file part that never ends
        sock.sendall(b"%x\r\n" % len(part) + part + b"\r\n")
        try:
            while sent < 40 * 2**20:  # 40 MB offered, no Content-Length
                if select.select([sock], [], [], 0)[0]:
                    break  # the server has answered: stop sending
                sock.sendall(b"%x\r\n" % len(chunk) + chunk + b"\r\n")
                sent += len(chunk)
        except (BrokenPipeError, ConnectionResetError):
            pass
        with contextlib.suppress(ConnectionResetError, TimeoutError):
            while b"larger than" not in answer:  # the headers and the body may come in two reads
                part = sock.recv(4096)
                if not part:
                    break
                answer += part
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    assert b"larger than 1000 bytes" in answer
    assert sent < 8 * 2**20, f"{sent} bytes were taken before the 413"


def test_a_slow_upload_does_not_block_other_requests(retrieval_index_dir: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    decoding = threading.Event()

    def slow_reader(data: bytes, filename: str, max_bytes: int = 0) -> dict[str, Any]:
        decoding.set()
        time.sleep(1.5)  # a large, slow-to-decode upload
        raise UploadError("decoded slowly", 422)

    monkeypatch.setattr(service, "read_patch_bytes", slow_reader)
    with _serve(service.create_app(retrieval_index_dir)) as (host, port):
        url = f"http://{host}:{port}"
        upload = threading.Thread(target=httpx.post, args=(f"{url}/api/search?k=3",),
                                  kwargs={"timeout": 30, "files": {"file": ("q.npz", b"1234")}})
        upload.start()
        assert decoding.wait(10), "the upload never reached the decoder"
        t0 = time.perf_counter()
        health = httpx.get(f"{url}/api/health", timeout=30)
        took = time.perf_counter() - t0
        upload.join()
        assert health.status_code == 200
        assert took < 1.0, f"/api/health waited {took:.2f} s behind the upload"
