"""ASCII tables laid out exactly as etcdctl's tablewriter renders them (``-w table``).

Settings mirror etcdctl's use: borders on, header centred and upper-cased, cells right-aligned,
cells wider than 30 columns wrapped at spaces with minimal raggedness.
"""

from __future__ import annotations

import unicodedata

MAX_CELL_WIDTH = 30


def display_width(text: str) -> int:
    """Terminal columns: East Asian wide/fullwidth characters take two."""
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _wrap_words(words: list[str], limit: int) -> list[list[str]]:
    """Minimal-raggedness line breaking (the square of each line's slack, long lines penalised)."""
    n = len(words)
    penalty = 100_000
    length = [[0] * n for _ in range(n)]
    for i in range(n):
        length[i][i] = display_width(words[i])
        for j in range(i + 1, n):
            length[i][j] = length[i][j - 1] + 1 + display_width(words[j])
    breaks = [0] * n
    cost = [2**31 - 1] * n
    for i in range(n - 1, -1, -1):
        if length[i][n - 1] <= limit:
            cost[i] = 0
            breaks[i] = n
            continue
        for j in range(i + 1, n):
            slack = limit - length[i][j - 1]
            candidate = slack * slack + cost[j]
            if length[i][j - 1] > limit:
                candidate += penalty
            if candidate < cost[i]:
                cost[i] = candidate
                breaks[i] = j
    lines: list[list[str]] = []
    i = 0
    while i < n:
        lines.append(words[i : breaks[i]])
        i = breaks[i]
    return lines


def _cell_lines(text: str) -> tuple[list[str], int]:
    """A cell's wrapped lines and the column width it claims (at least the wrap limit)."""
    raw = text.split("\n")
    width = min(max(display_width(line) for line in raw), MAX_CELL_WIDTH)
    words = " ".join(raw).split(" ")
    limit = max([width, *(display_width(w) for w in words)])
    lines = [" ".join(line) for line in _wrap_words(words, limit)]
    return lines, max([width, *(display_width(line) for line in lines)])


def _title(name: str) -> str:
    chars = list(name)
    for i, ch in enumerate(chars):
        if ch == "_":
            chars[i] = " "
        elif ch == ".":
            before = i != 0 and not (chars[i - 1].isdigit() or chars[i - 1] == " ")
            after = i != len(chars) - 1 and not (chars[i + 1].isdigit() or chars[i + 1] == " ")
            if before or after:
                chars[i] = " "
    text = "".join(chars).strip()
    if not text and name:
        text = " "
    return text.upper()


def _center(text: str, width: int) -> str:
    gap = width - display_width(text)
    if gap <= 0:
        return text
    left = gap // 2
    return " " * left + text + " " * (gap - left)


def _right(text: str, width: int) -> str:
    gap = width - display_width(text)
    return " " * gap + text if gap > 0 else text


def render_table(header: list[str], rows: list[list[str]]) -> str:
    """Render ``header`` and ``rows`` as etcdctl's bordered table, ending with a newline."""
    widths = [0] * len(header)
    head_cells: list[list[str]] = []
    for i, name in enumerate(header):
        lines, width = _cell_lines(name)
        head_cells.append([_title(line) for line in lines])
        widths[i] = max(widths[i], width)
    body: list[list[list[str]]] = []
    for row in rows:
        cells: list[list[str]] = []
        for i, text in enumerate(row):
            lines, width = _cell_lines(text)
            cells.append(lines)
            widths[i] = max(widths[i], width)
        body.append(cells)
    rule = "+" + "".join("-" * (w + 2) + "+" for w in widths) + "\n"
    out = [rule]
    for x in range(max(len(cell) for cell in head_cells)):
        line = "|"
        for i, head in enumerate(head_cells):
            text = head[x] if x < len(head) else ""
            line += " " + _center(text, widths[i]) + " |"
        out.append(line + "\n")
    out.append(rule)
    for body_row in body:
        height = max(len(cell_lines) for cell_lines in body_row)
        for x in range(height):
            line = ""
            for i, cell_lines in enumerate(body_row):
                text = cell_lines[x] if x < len(cell_lines) else "  "
                line += "| " + _right(text, widths[i]) + " "
            out.append(line + "|\n")
    out.append(rule)
    return "".join(out)
