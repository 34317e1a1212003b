"""The web page in Debian's headless chromium against a real uvicorn server on 127.0.0.1.

The page runs a search on load from its URL (``/?name=...&k=5``); chromium's ``--dump-dom`` prints the
DOM after the page's scripts ran, and ``--screenshot`` saves what a user sees (kept under
``BENMM_SCREENSHOT_DIR`` when set, else in the test's temp dir).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install chromium)"),
]
CHROMIUM_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--disable-dev-shm-usage",
)


@pytest.fixture()
def server(retrieval_server: str) -> str:
    return retrieval_server


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    assert CHROMIUM is not None
    profile = tmp_path / f"profile-{time.monotonic_ns()}"
    return subprocess.run(
        [CHROMIUM, *CHROMIUM_FLAGS, f"--user-data-dir={profile}", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


class _Cards(HTMLParser):
    """Collects result cards (data-name) and the chip texts inside each."""

    def __init__(self) -> None:
        super().__init__()
        self.cards: list[dict[str, object]] = []
        self.in_chip = False
        self.body_state: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "body":
            self.body_state = a.get("data-state")
        cls = (a.get("class") or "").split()
        if "result" in cls and "card" in cls:
            self.cards.append({"name": a.get("data-name"), "labels": []})
        self.in_chip = tag == "span" and "chip" in cls and bool(self.cards)

    def handle_data(self, data: str) -> None:
        if self.in_chip:
            self.cards[-1]["labels"].append(data)  # type: ignore[union-attr]
            self.in_chip = False


def test_page_shows_search_results(server: str, tmp_path: Path) -> None:
    health = httpx.get(f"{server}/api/health").json()
    name = httpx.get(f"{server}/api/names", params={"q": "37_88"}).json()["names"][0]
    expected = httpx.get(f"{server}/api/search", params={"name": name, "k": 5}).json()["results"]
    page = f"{server}/?name={name}&k=5"
    run = _chromium(tmp_path, "--virtual-time-budget=15000", "--dump-dom", page)
    assert run.returncode == 0, run.stderr[-2000:]
    dom = _Cards()
    dom.feed(run.stdout)
    assert dom.body_state == "done", run.stdout[-3000:]
    assert len(dom.cards) == 5
    assert [c["name"] for c in dom.cards] == [r["name"] for r in expected]
    assert [c["labels"] for c in dom.cards] == [r["labels"] for r in expected]
    assert f"{health['items']:,} archive patches" in run.stdout
    assert re.search(r"5 results · flat index", run.stdout)

    shots = Path(os.environ.get("BENMM_SCREENSHOT_DIR", tmp_path))
    shots.mkdir(parents=True, exist_ok=True)
    shot = shots / "retrieval-page.png"
    run = _chromium(
        tmp_path, "--virtual-time-budget=15000", "--window-size=1280,900", f"--screenshot={shot}", page
    )
    assert (
        run.returncode == 0 and shot.is_file() and shot.stat().st_size > 20_000
    )  # thumbnails drawn, not blank


def test_page_reports_unknown_patch(server: str, tmp_path: Path) -> None:
    run = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", f"{server}/?name=NOT_A_PATCH&k=5")
    assert run.returncode == 0
    assert 'data-state="error"' in run.stdout
    assert (
        "404: patch &#39;NOT_A_PATCH&#39; is not in this index" in run.stdout
        or "404: patch 'NOT_A_PATCH' is not in this index" in run.stdout
    )


def test_label_filter_from_url(server: str, tmp_path: Path) -> None:
    name = httpx.get(f"{server}/api/names", params={"q": "37_88"}).json()["names"][0]
    results = httpx.get(f"{server}/api/search", params={"name": name, "k": 10}).json()["results"]
    label = results[0]["labels"][0]
    want = [r["name"] for r in results if label in r["labels"]]
    assert 0 < len(want) <= 10
    run = _chromium(
        tmp_path,
        "--virtual-time-budget=15000",
        "--dump-dom",
        f"{server}/?name={name}&k=10&filter={quote(label)}",
    )
    dom = _Cards()
    dom.feed(run.stdout)
    assert [c["name"] for c in dom.cards] == want
    assert f"filter: {label} ({len(want)} shown)" in run.stdout


def test_page_says_why_thumbnails_and_uploads_are_off(retrieval_index_dir: Path, tmp_path: Path) -> None:
    """An index whose store has moved: the page says so in one line, with the fix, not 'no thumbnail'
    on every card without a reason."""
    import contextlib
    import threading
    import time

    import uvicorn

    from benmm.retrieval.service.app import create_app

    app = create_app(retrieval_index_dir, store=str(tmp_path / "moved.store"), embedder=None)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        run = _chromium(tmp_path, "--virtual-time-budget=10000", "--dump-dom", f"http://127.0.0.1:{port}/")
    finally:
        server.should_exit = True
        with contextlib.suppress(RuntimeError):
            thread.join(10)
    assert run.returncode == 0, run.stderr[-2000:]
    text = " ".join(run.stdout.split())
    assert "thumbnails are off: store" in text and "moved.store" in text, text[-3000:]
    assert "serve with --store PATH" in text
