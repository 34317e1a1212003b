"""``benmm retrieval-report``: the table the cross-modal retrieval literature prints, from the
``metrics.json`` files that ``benmm evaluate-retrieval`` writes, beside the figures the papers report
on the real archive (``benmm/resources/retrieval_reported.json``, each with its source).

Rows in the literature's order: S1->S1, S2->S2, S1S2->S1S2, S1->S2, S2->S1; columns mAP@K, P@K,
NDCG@K and F1@K (CSMAE's label-overlap F1) at each K asked for (5: BEN-14K papers, 10: CSMAE).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Final

from benmm.errors import RetrievalError

DIRECTIONS: Final = ("S1->S1", "S2->S2", "S1S2->S1S2", "S1->S2", "S2->S1")
COLUMNS: Final = (("map", "mAP"), ("precision", "P"), ("ndcg", "NDCG"), ("f1", "F1"))
REPORTED: Final = "retrieval_reported.json"
LITERATURE_KS: Final = (5, 10)
MISSING: Final = "–"


def find_metrics(paths: Iterable[str | Path]) -> list[tuple[Path, dict[str, Any]]]:
    """Every ``metrics.json`` given, or found under the folders given (run folders, report folders)."""
    found: list[Path] = []
    for p in map(Path, paths):
        if p.is_file():
            found.append(p)
        elif p.is_dir():
            found.extend(sorted(p.rglob("metrics.json")))
        else:
            raise RetrievalError(f"{p}: no such file or folder (give metrics.json files or their folders)")
    if not found:
        raise RetrievalError(f"no metrics.json under {', '.join(map(str, paths))}; "
                             "run `benmm evaluate-retrieval` first")
    out = []
    for f in found:
        try:
            out.append((f, json.loads(f.read_text())))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise RetrievalError(f"{f}: not a metrics.json ({exc})") from None
    return out


def reported_figures() -> dict[str, Any]:
    from benmm.resources import resource_path

    return dict(json.loads(resource_path(REPORTED).read_text()))


def _code(m: dict[str, Any]) -> str:
    bits = m.get("code_bits") or m.get("bits")
    return f"{bits} bit" if bits else f"float {m.get('dim', '?')}-d"


def _order(direction: str) -> int:
    return DIRECTIONS.index(direction) if direction in DIRECTIONS else len(DIRECTIONS)


def report_rows(found: Sequence[tuple[Path, dict[str, Any]]], ks: Sequence[int] = LITERATURE_KS,
                reported: bool = True) -> tuple[list[str], list[list[str]]]:
    """(header, rows): measured rows sorted by direction, then the reported figures (labelled)."""
    header = ["source", "direction", "protocol", "code", *(f"{t}@{k}" for k in ks for _, t in COLUMNS)]
    rows: list[list[str]] = []
    for path, m in sorted(found, key=lambda fm: (_order(str(fm[1].get("direction"))), str(fm[0]))):
        cells = [f"{m.get(f'{key}@{k}'):.4f}" if m.get(f"{key}@{k}") is not None else MISSING
                 for k in ks for key, _ in COLUMNS]
        rows.append([f"measured: {path.parent.name}", str(m.get("direction", "?")),
                     f"{m.get('protocol', '?')} ({m.get('query_split')}->{m.get('archive_split')})", _code(m),
                     *cells])
        rand = m.get("random") or {}
        rows.append([f"  random ranking: {path.parent.name}", str(m.get("direction", "?")), "", "",
                     *(f"{rand[f'{key}@{k}']:.4f}" if f"{key}@{k}" in rand else MISSING
                       for k in ks for key, _ in COLUMNS)])
    if reported:
        data = reported_figures()
        for paper in data["papers"]:
            for fig in sorted(paper.get("figures") or (), key=lambda f: _order(f["direction"])):
                cells = [f"{fig['value']:.4f}" if (fig["metric"], fig["k"]) == (key, k) else MISSING
                         for k in ks for key, _ in COLUMNS]
                rows.append([f"{data['label']}: {paper['id']} ({paper['archive'].split(' (')[0]})",
                             fig["direction"], "paper's own", MISSING, *cells])
    return header, rows


def papers_without_figures() -> list[str]:
    """One line per recorded paper whose figures could not be found (said, not hidden)."""
    return [f"{p['id']}: {p['figures_note']}" for p in reported_figures()["papers"] if not p.get("figures")]
