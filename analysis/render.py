"""Rendering: the long frames of ``analysis.tables`` -> a ``Table`` (rows x columns of estimates) -> Markdown,
LaTeX (booktabs) or CSV. The best value of each column is bold, by the metric's direction (``analysis.metrics``);
a value with one seed shows no interval; a missing value shows "—" and says why when it can.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass, field

import pandas as pd

from analysis.metrics import direction, metric_info


@dataclass
class Entry:
    mean: float
    lo: float = math.nan
    hi: float = math.nan
    n: int = 0
    note: str = ""  # shown after the value, e.g. "3/4 same sign", "2 of 4 reached"


@dataclass
class Column:
    key: str  # unique key of the column
    label: str  # heading
    direction: int = 0  # +1 higher is better, -1 lower is better, 0 no best marked
    digits: int = 3
    signed: bool = False  # show "+" on positive values (differences)


@dataclass
class Table:
    title: str
    row_header: str
    rows: list[str]
    columns: list[Column]
    entries: dict = field(default_factory=dict)  # (row, column key) -> Entry
    notes: list[str] = field(default_factory=list)
    name: str = "table"  # file stem when written

    def best(self) -> set:
        """(row, column key) of the best finite mean in each column with a direction, compared as shown (rounded to
        the column's digits); ties are all bold, and nothing is when all values are equal."""
        out = set()
        for c in self.columns:
            vals = {r: round(self.entries[(r, c.key)].mean, c.digits) for r in self.rows  # as shown
                    if (r, c.key) in self.entries and math.isfinite(self.entries[(r, c.key)].mean)}
            if c.direction and len(set(vals.values())) > 1:  # all equal: nothing is best
                top = max(v * c.direction for v in vals.values())
                out |= {(r, c.key) for r, v in vals.items() if v * c.direction == top}
        return out


def _num(x: float, c: Column) -> str:
    return f"{x:+.{c.digits}f}" if c.signed else f"{x:.{c.digits}f}"


def entry_parts(e: Entry | None, c: Column, pm: str = "±") -> tuple[str, str]:
    """(value, rest): the value alone (what bold wraps) and the interval and note after it."""
    if e is None or not math.isfinite(e.mean):
        return "—", f" ({e.note})" if e is not None and e.note else ""
    rest = ""
    if math.isfinite(e.lo) and math.isfinite(e.hi):
        below, above = e.mean - e.lo, e.hi - e.mean
        if abs(below - above) <= 1e-9 * max(1.0, abs(e.mean)):
            rest = f" {pm} {above:.{c.digits}f}"
        else:
            rest = f" [{e.lo:.{c.digits}f}, {e.hi:.{c.digits}f}]"
    return _num(e.mean, c), rest + (f" ({e.note})" if e.note else "")


def markdown(t: Table) -> str:
    best = t.best()
    lines = [f"**{t.title}**", "", "| " + " | ".join([t.row_header] + [c.label for c in t.columns]) + " |",
             "|" + "---|" + "---:|" * len(t.columns)]
    for r in t.rows:
        cells = []
        for c in t.columns:
            value, rest = entry_parts(t.entries.get((r, c.key)), c)
            cells.append((f"**{value}**" if (r, c.key) in best else value) + rest)
        lines.append("| " + " | ".join([r, *cells]) + " |")
    return "\n".join(lines + ([""] + [f"- {n}" for n in t.notes] if t.notes else [])) + "\n"


def _tex(s: str) -> str:
    for a, b in (("\\", r"\textbackslash{}"), ("&", r"\&"), ("%", r"\%"), ("_", r"\_"), ("#", r"\#"),
                 ("±", r"$\pm$"), ("—", "--"), ("σ", r"$\sigma$")):
        s = s.replace(a, b)
    return s


def latex(t: Table) -> str:
    best = t.best()
    out = [f"% {t.title}", r"\begin{tabular}{l" + "r" * len(t.columns) + "}", r"\toprule",
           " & ".join(_tex(h) for h in [t.row_header] + [c.label for c in t.columns]) + r" \\", r"\midrule"]
    for r in t.rows:
        cells = []
        for c in t.columns:
            value, rest = entry_parts(t.entries.get((r, c.key)), c)
            cells.append((rf"\textbf{{{_tex(value)}}}" if (r, c.key) in best else _tex(value)) + _tex(rest))
        out.append(" & ".join([_tex(r), *cells]) + r" \\")
    out += [r"\bottomrule", r"\end{tabular}"]
    out += [f"% {_tex(n)}" for n in t.notes]
    return "\n".join(out) + "\n"


def csv(t: Table) -> str:
    """Tidy CSV: one line per (row, column) with the numbers unrounded."""
    rows = [{"row": r, "column": c.label, "mean": e.mean, "lo": e.lo, "hi": e.hi, "n": e.n, "note": e.note}
            for r in t.rows for c in t.columns if (e := t.entries.get((r, c.key))) is not None]
    buf = io.StringIO()
    pd.DataFrame(rows, columns=["row", "column", "mean", "lo", "hi", "n", "note"]).to_csv(buf, index=False)
    return buf.getvalue()


RENDERERS = {"md": markdown, "tex": latex, "csv": csv}


# -- builders' frames -> Table -------------------------------------------------------------------------------------
def _metric_column(metric: str, key: str | None = None, label: str | None = None, signed: bool = False,
                   best: bool = True) -> Column:
    info = metric_info(metric)
    return Column(key or metric, label or info.label, direction(metric) if best else 0, info.digits, signed)


def _n_note(n: int, runs: int) -> str:
    if runs == 0:
        return "no finished run"
    return "" if n == runs else f"n={n} of {runs} runs"


def cells_view(frame: pd.DataFrame, title: str, row_header: str = "cell", notes=(), name: str = "cells") -> Table:
    """``cell_table`` output -> Table with a final ``n`` column (runs per cell); a metric with fewer values than
    runs (missing or NaN) says so in its entry."""
    metrics = list(dict.fromkeys(frame["metric"]))
    rows = list(dict.fromkeys(frame["cell"]))
    t = Table(title, row_header, rows, [_metric_column(m) for m in metrics] + [Column("n", "n", 0, 0)],
              notes=list(notes), name=name)
    for rec in frame.itertuples():
        t.entries[(rec.cell, rec.metric)] = Entry(rec.mean, rec.lo, rec.hi, int(rec.n), _n_note(int(rec.n), int(rec.runs)))
        t.entries[(rec.cell, "n")] = Entry(float(rec.runs), n=int(rec.runs))
    return t


def _columns(frame: pd.DataFrame, reward: str, signed: bool = False, best: bool = True):
    """Columns of a builder's frame: one per metric, or one per (metric, reward level) when it has ``level``;
    returns them with the function giving a record's column key."""
    if "level" not in frame.columns:
        cols = [_metric_column(m, signed=signed, best=best) for m in dict.fromkeys(frame["metric"])]
        return cols, lambda rec: rec.metric
    rlabel = metric_info(reward).label
    cols = [_metric_column(m, key=f"{m}@{lv}", label=f"{metric_info(m).label} @ {rlabel} {lv:g}", signed=signed,
                           best=best) for m, lv in dict.fromkeys(zip(frame["metric"], frame["level"]))]
    return cols, lambda rec: f"{rec.metric}@{rec.level}"


def paired_view(frame: pd.DataFrame, title: str, row_header: str = "cell", notes=(), name: str = "paired",
                reward: str = "eval/reward") -> Table:
    """``paired_table`` / ``matched_paired_table`` output -> Table of differences; the note gives the seeds agreeing
    in sign (or "unpaired")."""
    cols, key = _columns(frame, reward, signed=True, best=False)
    t = Table(title, row_header, list(dict.fromkeys(frame["cell"])), cols, notes=list(notes), name=name)
    for rec in frame.itertuples():
        note = f"{rec.n_sign}/{rec.n} same sign" if rec.paired else "unpaired"
        t.entries[(rec.cell, key(rec))] = Entry(rec.mean, rec.lo, rec.hi, int(rec.n), note if rec.n else "")
    return t


def matched_view(frame: pd.DataFrame, title: str, reward: str = "eval/reward", row_header: str = "cell", notes=(),
                 name: str = "matched") -> Table:
    """``matched_reward_table`` output -> Table with a column per (metric, level); an entry notes how many of the
    cell's runs reach the level when not all do."""
    cols, key = _columns(frame, reward)
    t = Table(title, row_header, list(dict.fromkeys(frame["cell"])), cols, notes=list(notes), name=name)
    for rec in frame.itertuples():
        note = "" if rec.reached == rec.runs else f"{rec.reached} of {rec.runs} runs reach it"
        t.entries[(rec.cell, key(rec))] = Entry(rec.mean, rec.lo, rec.hi, int(rec.n), note)
    return t


def pairwise_view(frame: pd.DataFrame, title: str, row_header: str = "cell", notes=(),
                  name: str = "matched_pairwise", reward: str = "eval/reward") -> Table:
    """``pairwise_matched_table`` output -> Table with a column per (metric, level step) and one per metric for the
    mean over levels; each pair has its own levels, so every level entry names its reward."""
    rlabel = metric_info(reward).label
    keys = list(dict.fromkeys(zip(frame["metric"], frame["step"])))
    cols = [_metric_column(m, key=f"{m}@{st}", signed=True, best=False,
                           label=f"{metric_info(m).label} - ref, " + ("mean over levels" if st == "mean" else
                                                                       f"level {st}")) for m, st in keys]
    t = Table(title, row_header, list(dict.fromkeys(frame["cell"])), cols, notes=list(notes), name=name)
    for rec in frame.itertuples():
        parts = [] if rec.step == "mean" else [f"{rlabel} {rec.level:g}"]
        if rec.n:
            parts.append(f"{rec.n_sign}/{rec.n} same sign" if rec.paired else "unpaired")
        t.entries[(rec.cell, f"{rec.metric}@{rec.step}")] = Entry(rec.mean, rec.lo, rec.hi, int(rec.n), "; ".join(parts))
    return t


def paper_view(frame: pd.DataFrame, paper: dict, experiment: str | None = None, name: str | None = None) -> Table:
    """``paper_side_by_side`` output -> Table with "paper" and "ours" columns for each of the paper's columns."""
    experiment = experiment or paper["experiment"]
    cols = []
    for c in paper["columns"]:
        for source in ("paper", "ours"):
            cols.append(_metric_column(c["metric"], key=f"{c['name']}/{source}", label=f"{c['name']} ({source})"))
            cols[-1].digits = c.get("digits", cols[-1].digits)
    notes = [f"paper: {paper['title']} (Table {paper['table']}); ours: runs of experiment {experiment}"]
    notes += [f"paper, {n['ablation']}: {n['text']}" for n in paper.get("notes", [])]
    t = Table(f"Paper Table {paper['table']} beside ours: {paper['title']}", "method",
              [r["name"] for r in paper["rows"]], cols, notes=notes, name=name or f"paper_table{paper['table']}")
    for rec in frame.itertuples():
        note = "" if rec.source == "paper" or rec.n else "no run"
        t.entries[(rec.row, f"{rec.column}/{rec.source}")] = Entry(rec.mean, rec.lo, rec.hi, int(rec.n), note)
    return t
