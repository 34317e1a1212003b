"""Build ``src/benmm/retrieval/service/static/europe.json``: the outline of Europe for the page's map.

Source: Natural Earth 1:50m Admin 0 country boundaries (public domain), as TopoJSON in the npm package
``world-atlas`` 2.0.2 (``countries-50m.json``; `npm pack world-atlas@2.0.2`). Every arc of the topology
(coastlines and borders, each once) is decoded, clipped to the map's box, simplified (Douglas-Peucker,
shapely) and rounded to 0.01 degrees.

    python tools/make_europe_outline.py package/countries-50m.json \
        src/benmm/retrieval/service/static/europe.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import shapely
from shapely.geometry import LineString, box

BOX = (-25.0, 34.0, 45.0, 72.0)  # lon_min, lat_min, lon_max, lat_max: BigEarthNet's ten countries and around
TOLERANCE = 0.04  # degrees


def decode_arcs(topo: dict) -> list[list[tuple[float, float]]]:
    (sx, sy), (tx, ty) = topo["transform"]["scale"], topo["transform"]["translate"]
    out = []
    for arc in topo["arcs"]:  # delta-encoded, quantized (TopoJSON specification, section 2.1.1)
        x = y = 0
        pts = []
        for dx, dy in arc:
            x, y = x + dx, y + dy
            pts.append((x * sx + tx, y * sy + ty))
        out.append(pts)
    return out


def main(src: str, dst: str) -> None:
    topo = json.loads(Path(src).read_text())
    clip = box(*BOX)
    lines = []
    for pts in decode_arcs(topo):
        if len(pts) < 2:
            continue
        part = LineString(pts).intersection(clip)
        for g in getattr(part, "geoms", [part]):
            if g.is_empty or g.geom_type != "LineString":
                continue
            g = shapely.simplify(g, TOLERANCE)
            coords = [[round(x, 2), round(y, 2)] for x, y in g.coords]
            if len(coords) >= 2:
                lines.append(coords)
    doc = {"source": "Natural Earth 1:50m Admin 0 countries (public domain), via npm world-atlas 2.0.2 "
                     "countries-50m.json; clipped, simplified (0.04 deg) and rounded (0.01 deg)",
           "bbox": list(BOX), "lines": lines}
    Path(dst).write_text(json.dumps(doc, separators=(",", ":")) + "\n")
    print(f"{dst}: {len(lines)} lines, {sum(map(len, lines))} points, {Path(dst).stat().st_size:,} bytes")


if __name__ == "__main__":
    main(*sys.argv[1:3])
