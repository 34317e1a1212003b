"""The results of a grid: one table (mean ± std over seeds), per-class differences, plots.

``summarize(grid, out)`` reads every finished run's ``result.json`` and writes ``results.md`` and
``results.csv`` (one row per setting and nomenclature it is scored on: a 43-class setting has a row on 43
and one on 19, converted), ``classes.md`` / ``classes.csv`` (per-class AP and F1 of setting b minus
setting a of the grid's [compare], the paper's "which classes gain" view, on the 19-class nomenclature
where both sides have it) and ``results.png``, ``classes.png`` (and ``fraction.png`` when the grid varies
the fraction). The std is the sample std over seeds (n - 1); with one seed it is not defined ("—").
Figures published for a matching setting (``resources/reported_figures.json``) stand beside, labelled
"reported, real archive".
"""

from __future__ import annotations

import csv
import io
import json
import math
from functools import cache
from pathlib import Path
from typing import Any, Final

from benmm.atomic import atomic_write
from benmm.train.experiment.grid import SETTING_AXES, Grid
from benmm.train.experiment.rows import CLASS_METRICS, METRICS, REPORTED_LABEL, Row, describe
from benmm.train.experiment.runner import RESULT, run_folder


@cache
def reported_figures() -> list[dict[str, Any]]:
    from benmm.resources import resource_path

    data = json.loads(resource_path("reported_figures.json").read_text(encoding="utf-8"))
    return list(data["figures"])


def match_reported(setting: dict[str, Any], scored_on: int) -> dict[str, Any] | None:
    """The published figure for this setting (every key the entry gives must match), or None."""
    for fig in reported_figures():
        if fig["scored_on"] == scored_on and all(setting.get(k) == v for k, v in fig["setting"].items()):
            return fig
    return None


def collect(grid: Grid, out: Path) -> list[Row]:
    """The rows of the grid's finished runs, in grid order."""
    rows: dict[tuple[str, int], Row] = {}
    for run in grid.runs():
        path = run_folder(out, run) / RESULT
        if not path.is_file():
            continue
        result = json.loads(path.read_text(encoding="utf-8"))
        for scored_on, block in sorted(result["scores"].items(), key=lambda kv: -int(kv[0])):
            key = (json.dumps(run.setting, sort_keys=True), int(scored_on))
            row = rows.setdefault(key, Row(setting=run.setting, scored_on=int(scored_on),
                                           init_kind=str(result.get("init_kind", "scratch"))))
            row.seeds.append(run.seed)
            for m in METRICS:
                row.values.setdefault(m, []).append(float(block["metrics"][m]))
            for cls in block["per_class"]:
                slot = row.per_class.setdefault(cls["class"], {})
                for m in CLASS_METRICS:
                    slot.setdefault(m, []).append(float(cls[m]))
    for row in rows.values():
        row.reported = match_reported(row.setting, row.scored_on)
    return list(rows.values())


def _pm(row: Row, key: str) -> str:
    mean, std = row.mean(key), row.std(key)
    return f"{mean:.4f} ± {std:.4f}" if std == std else f"{mean:.4f} ± —"


def _reported_cell(row: Row) -> str:
    fig = row.reported
    if fig is None:
        return ""
    m = fig["metrics"]
    return f"AP {m['ap_macro']:.4f} / {m['ap_micro']:.4f} ({fig['archive']}; {fig['source'].split(',')[0]})"


HEADER: Final = ("model", "modality", "labels", "init", "fraction", "scored on", "seeds",
                 *METRICS, REPORTED_LABEL + " (macro / micro)")


def table_rows(rows: list[Row]) -> list[list[str]]:
    return [[str(r.setting["model"]), str(r.setting["modality"]), str(r.setting["labels"]), r.init_label,
             f"{r.setting['fraction']:g}", str(r.scored_on) + (" (from 43)" if r.setting["labels"] == 43
                                                                and r.scored_on == 19 else ""),
             str(len(r.seeds)), *(_pm(r, m) for m in METRICS), _reported_cell(r)] for r in rows]


def markdown(header: tuple[str, ...] | list[str], body: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(" --- " for _ in header) + "|"]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in body]
    return "\n".join(lines) + "\n"


def results_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow([*SETTING_AXES, "init_kind", "scored_on", "seeds",
                *(f"{m}_{s}" for m in METRICS for s in ("mean", "std")),
                "reported_ap_macro", "reported_ap_micro", "reported_archive", "reported_source"])
    for r in rows:
        fig = r.reported or {}
        w.writerow([*(r.setting[a] for a in SETTING_AXES), r.init_kind, r.scored_on, len(r.seeds),
                    *(f"{v:.6f}" for m in METRICS for v in (r.mean(m), r.std(m))),
                    fig.get("metrics", {}).get("ap_macro", ""), fig.get("metrics", {}).get("ap_micro", ""),
                    fig.get("archive", ""), fig.get("source", "")])
    return buf.getvalue()


def pairs(rows: list[Row], a: dict[str, Any], b: dict[str, Any]) -> list[tuple[Row, Row]]:
    """(a row, b row) pairs: settings equal but for the keys of the comparison, scored on the same
    nomenclature (19 where both sides have it)."""
    keys = set(a) | set(b)
    out = []
    for ra in rows:
        if not all(ra.setting[k] == v for k, v in a.items()):
            continue
        for rb in rows:
            same = all(rb.setting[k] == ra.setting[k] for k in SETTING_AXES if k not in keys)
            if same and all(rb.setting[k] == v for k, v in b.items()) and rb.scored_on == ra.scored_on:
                both19 = ra.scored_on == 19 or ra.setting["labels"] == rb.setting["labels"]
                if both19:
                    out.append((ra, rb))
    return out


def class_diffs(ra: Row, rb: Row) -> list[dict[str, Any]]:
    """Per class: mean AP / F1 of a and b over seeds and b - a, sorted by the AP gain (largest first)."""
    names = [n for n in ra.per_class if n in rb.per_class]
    out = []
    for name in names:
        row: dict[str, Any] = {"class": name}
        for m in CLASS_METRICS:
            va, vb = ra.class_mean(name, m), rb.class_mean(name, m)
            row[f"{m}_a"], row[f"{m}_b"], row[f"{m}_gain"] = va, vb, vb - va
        out.append(row)
    return sorted(out, key=lambda r: -(r["ap_gain"] if r["ap_gain"] == r["ap_gain"] else -math.inf))


def summarize(grid: Grid, out: Path, plots: bool = True) -> dict[str, Any]:
    """Write the tables and plots of ``out`` (see the module docstring); returns what was written."""
    from benmm.train.experiment import plots as figs

    rows = collect(grid, out)
    files: list[Path] = []
    title = f"{grid.name}: {grid.description}".strip(": ")
    text = (f"# {title}\n\nMean ± sample std over seeds, {grid.split} split. A 43-class setting is also "
            "scored on 19 classes (each 19-class score = the maximum over the 43-class scores that merge "
            f"into it). '{REPORTED_LABEL}': published figures for the same setting on the real archive, "
            "not comparable with a synthetic store's.\n\n" + markdown(HEADER, table_rows(rows)))
    atomic_write(out / "results.md", text)
    atomic_write(out / "results.csv", results_csv(rows))
    files += [out / "results.md", out / "results.csv"]
    compared: list[tuple[Row, Row, list[dict[str, Any]]]] = []
    if grid.compare is not None:
        a, b = grid.compare
        compared = [(ra, rb, class_diffs(ra, rb)) for ra, rb in pairs(rows, a, b)]
        md = [f"# Which classes gain: b = {b} over a = {a}\n"]
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(["a", "b", "class", *(f"{m}_{s}" for m in CLASS_METRICS for s in ("a", "b", "gain"))])
        for ra, rb, diffs in compared:
            md.append(f"\n## {describe(rb)} minus {describe(ra)}\n\n" + markdown(
                ["class", "AP a", "AP b", "AP gain", "F1 a", "F1 b", "F1 gain"],
                [[d["class"], *(f"{d[f'{m}_{s}']:+.4f}" if s == "gain" else f"{d[f'{m}_{s}']:.4f}"
                                for m in CLASS_METRICS for s in ("a", "b", "gain"))] for d in diffs]))
            for d in diffs:
                w.writerow([describe(ra), describe(rb), d["class"],
                            *(f"{d[f'{m}_{s}']:.6f}" for m in CLASS_METRICS for s in ("a", "b", "gain"))])
        if not compared:
            md.append("\nNo pair of finished settings matches the comparison yet.\n")
        atomic_write(out / "classes.md", "".join(md))
        atomic_write(out / "classes.csv", buf.getvalue())
        files += [out / "classes.md", out / "classes.csv"]
    if plots and rows:
        files.append(figs.results_plot(rows, out / "results.png", title))
        if compared:
            files.append(figs.classes_plot(compared, out / "classes.png"))
        if len(grid.axes["fraction"]) > 1:
            files.append(figs.fraction_plot(rows, out / "fraction.png", title))
    return {"rows": rows, "files": files, "compared": compared}
