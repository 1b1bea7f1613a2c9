"""Tables that fit a width: which columns to keep, how wide each is, and times relative to ``now``.

Rich shrinks a table that is too wide by wrapping or cutting every column a
little, which at 80 columns cut statuses to ``ac…`` and wrapped names over four
lines. Here the table is laid out before rich sees it: every column gets its
natural width (its widest cell), and while the whole is wider than the
terminal the table's own list of *steps* is applied in order: shrink a
column (a message, cut with ``…``), use a shorter form of a column (a name
without its id), or drop a column. Columns marked ``required`` never drop.
Pure: no clock (``now`` is passed in), no terminal (``width`` is passed in).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Mapping, Sequence

if TYPE_CHECKING:
    from rich.table import Table

ELLIPSIS = "…"
MIN_CUT = 4  # cells a column keeps when the last resort cuts it ("in …")
GAP = 3  # columns between two cells (rich's SIMPLE_HEAD box, no outer edge); a plain table uses 2


@dataclass
class Column:
    """One column: ``key`` into the row dicts; ``short`` the keys of narrower forms of it, narrowest last."""

    key: str
    header: str
    required: bool = False
    short: tuple[str, ...] = ()
    justify: str = "left"
    style: Mapping[str, str] = field(default_factory=dict)  # cell text -> rich style (statuses)


@dataclass(frozen=True)
class Step:
    """One way to save room: ``drop`` a column, ``shrink`` it to ``width``, or use its next ``short`` form."""

    action: str  # "drop" | "shrink" | "short"
    key: str
    width: int = 0


def cell_width(text: str) -> int:
    from rich.cells import cell_len

    return cell_len(text)


def cut(text: str | None, width: int) -> str:
    """One line of at most ``width`` cells; longer text ends with ``…`` (never wrapped).

    A character a terminal would act on (ESC, BEL, …: a job's command or a crawl's message may
    hold them) is shown escaped, ``\\x1b``, never sent as is: a table cannot retitle the window
    or move the cursor."""
    if not text:
        return ""
    text = " ".join(str(text).split())
    if not text.isprintable():
        text = "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)
    if cell_width(text) <= width:
        return text
    from rich.cells import set_cell_size

    return set_cell_size(text, max(width - 1, 0)) + ELLIPSIS if width > 0 else ""


@dataclass
class Layout:
    """The result of :func:`fit`: the columns kept, in order, their widths, and the short form each uses."""

    columns: list[Column]
    widths: dict[str, int]
    short: dict[str, int]  #: column key -> how many of its short forms were taken (1: the first)
    gap: int = GAP

    def text(self, row: Mapping[str, str], column: Column) -> str:
        return row.get(_form(column, self.short)) or ""

    @property
    def total(self) -> int:
        return total_width([self.widths[c.key] for c in self.columns], self.gap)


def _form(col: Column, short: Mapping[str, int]) -> str:
    taken = short.get(col.key, 0)
    return col.short[taken - 1] if taken else col.key


def total_width(widths: Sequence[int], gap: int = GAP) -> int:
    return sum(widths) + gap * max(len(widths) - 1, 0)


def fit(columns: Sequence[Column], rows: Sequence[Mapping[str, str]], width: int, steps: Sequence[Step],
        gap: int = GAP) -> Layout:
    """Keep and size the columns so that a row is at most ``width`` cells wide (see the module doc)."""
    kept = list(columns)
    short: dict[str, int] = {}

    def natural(col: Column) -> int:
        key = _form(col, short)
        cells = [cell_width(r.get(key) or "") for r in rows]
        return max([cell_width(col.header), *cells])

    widths = {c.key: natural(c) for c in kept}

    def total() -> int:
        return total_width([widths[c.key] for c in kept], gap)

    for step in steps:
        if total() <= width:
            break
        col = next((c for c in kept if c.key == step.key), None)
        if col is None:
            continue
        if step.action == "drop" and not col.required:
            kept.remove(col)
        elif step.action == "shrink":
            widths[col.key] = min(widths[col.key], max(step.width, cell_width(col.header)))
        elif step.action == "short" and short.get(col.key, 0) < len(col.short):
            short[col.key] = short.get(col.key, 0) + 1
            widths[col.key] = natural(col)
    # A shrink cuts to its step's width, which can be more than was needed once the steps after it
    # dropped other columns: the cells still free go back to the columns cut short.
    spare = width - total()
    for col in kept:
        if spare <= 0:
            break
        give = min(spare, natural(col) - widths[col.key])
        if give > 0:
            widths[col.key] += give
            spare -= give
    over = total() - width
    # Only required columns are left and still too wide (a very long name): the others give
    # way first, widest first, each down to a few cells, cut with an ellipsis (never wrapped);
    # the first column (what names the row) is cut last.
    for col in sorted(kept[1:], key=lambda c: -widths[c.key]):
        if over <= 0:
            break
        take = min(over, widths[col.key] - min(widths[col.key], MIN_CUT))
        widths[col.key] -= take
        over -= take
    if over > 0:
        widths[kept[0].key] = max(widths[kept[0].key] - over, 1)
    return Layout(kept, widths, short, gap)


def build(layout: Layout, rows: Sequence[Mapping[str, str]], *, plain: bool, caption: str | None = None) -> Table:
    """The rich table of a layout: every cell on one line, cut to its column's width."""
    from rich import box
    from rich.table import Table
    from rich.text import Text

    table = Table(box=None if plain else box.SIMPLE_HEAD, show_edge=False, pad_edge=False,
                  padding=(0, 1), collapse_padding=False, expand=False)
    for col in layout.columns:
        w = layout.widths[col.key]
        table.add_column(col.header, width=w, no_wrap=True, overflow="ellipsis", justify=col.justify)  # type: ignore[arg-type]
    for row in rows:
        cells = []
        for col in layout.columns:
            text = cut(layout.text(row, col), layout.widths[col.key])
            style = "" if plain else col.style.get(row.get(col.key + ":style", ""), "")
            cells.append(Text(text, style=style))
        table.add_row(*cells)
    if caption:
        table.caption = caption
    return table


# --- times a person scans ----------------------------------------------------------------


def _span(seconds: float) -> str:
    """``45s``, ``5m``, ``3h 20m``, ``2d 4h``: at most two units, the larger first."""
    s = int(round(abs(seconds)))
    if s < 60:
        return f"{s}s"
    m, h, d = s // 60, s // 3600, s // 86400
    if s < 3600:
        return f"{m}m"
    if s < 86400:
        rest = (s % 3600) // 60
        return f"{h}h {rest}m" if rest else f"{h}h"
    if d < 30:
        rest = (s % 86400) // 3600
        return f"{d}d {rest}h" if rest else f"{d}d"
    return f"{d}d"


def relative(instant: datetime | None, now: datetime) -> str:
    """``in 5m`` / ``3h ago`` / ``now`` (as ``systemctl list-timers`` reads); ``-`` for no time."""
    if instant is None:
        return "-"
    delta = (instant - now).total_seconds()
    if abs(delta) < 1:
        return "now"
    return f"in {_span(delta)}" if delta > 0 else f"{_span(delta)} ago"


def parse_iso(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text else None
