"""Go's ``text/tabwriter`` with etcdctl's settings (minwidth 0, tabwidth 8, padding 1, tab padding).

etcdctl's help and usage text go through it, so the column alignment of ``OPTIONS:`` comes out in
tabs. Cells are tab-terminated; a column is aligned over a run of consecutive lines that have it.
"""

from __future__ import annotations

TAB_WIDTH = 8
PADDING = 1


def _padding(text_width: int, cell_width: int) -> str:
    cell_width = (cell_width + TAB_WIDTH - 1) // TAB_WIDTH * TAB_WIDTH
    return "\t" * ((cell_width - text_width + TAB_WIDTH - 1) // TAB_WIDTH)


def _format_block(lines: list[list[str]], out: list[str]) -> None:
    widths: list[int] = []

    def write_lines(first: int, last: int) -> None:
        for cells in lines[first:last]:
            for j, cell in enumerate(cells):
                if j < len(cells) - 1:
                    out.append(cell)
                    if j < len(widths):
                        out.append(_padding(len(cell), widths[j]))
                else:
                    out.append(cell)
            out.append("\n")

    def fmt(first: int, last: int) -> None:
        column = len(widths)
        this = first
        while this < last:
            if column >= len(lines[this]) - 1:
                this += 1
                continue
            write_lines(first, this)
            first = this
            width = 0
            while this < last and column < len(lines[this]) - 1:
                width = max(width, len(lines[this][column]) + PADDING)
                this += 1
            widths.append(width)
            fmt(first, this)
            widths.pop()
            first = this
        write_lines(first, last)

    fmt(0, len(lines))


def tabwrite(text: str) -> str:
    """Align tab-separated cells in ``text``; lines without tabs end the current block."""
    out: list[str] = []
    block: list[list[str]] = []
    raw_lines = text.split("\n")
    trailing = raw_lines.pop()
    for raw in raw_lines:
        cells = raw.split("\t")
        block.append(cells)
        if len(cells) == 1:
            _format_block(block, out)
            block = []
    if block:
        _format_block(block, out)
    return "".join(out) + trailing
