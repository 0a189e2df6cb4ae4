"""Build the ``.ipynb`` notebooks from their percent-format ``.py`` sources
(the jupytext "percent" convention: ``# %%`` starts a code cell,
``# %% [markdown]`` a markdown cell whose lines are commented out).

The ``.py`` files are what gets reviewed and linted; the ``.ipynb`` files are
what analysts open.  ``python notebooks/_build.py`` rewrites them, and a test
fails when the two disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
_MARKER = re.compile(r"^# %%(?: \[(markdown)\])?\s*$")


def sources() -> list[Path]:
    return sorted(p for p in HERE.glob("*.py") if not p.name.startswith("_"))


def _flush(kind: str | None, lines: list[str], cells: list[nbformat.NotebookNode]) -> None:
    while lines and not lines[-1].strip():
        lines.pop()
    while lines and not lines[0].strip():
        lines.pop(0)
    if kind is None or not lines:
        return
    if kind == "markdown":
        text = "\n".join(re.sub(r"^# ?", "", line) for line in lines)
        cells.append(nbformat.v4.new_markdown_cell(text))
    else:
        # File-level lint directives are for the .py source only.
        code = [line for line in lines if not line.startswith("# ruff: noqa")]
        cells.append(nbformat.v4.new_code_cell("\n".join(code)))


def notebook(source: str) -> nbformat.NotebookNode:
    cells: list[nbformat.NotebookNode] = []
    kind: str | None = None
    lines: list[str] = []
    for line in source.splitlines():
        m = _MARKER.match(line)
        if m:
            _flush(kind, lines, cells)
            kind, lines = (m.group(1) or "code"), []
        else:
            lines.append(line)
    _flush(kind, lines, cells)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    # Stable ids, so a rebuild of an unchanged source is byte-identical.
    for i, cell in enumerate(nb.cells):
        cell["id"] = f"cell-{i}"
    return nb


def build(path: Path) -> Path:
    target = path.with_suffix(".ipynb")
    nb = notebook(path.read_text(encoding="utf-8"))
    target.write_text(nbformat.writes(nb) + "\n", encoding="utf-8")
    return target


if __name__ == "__main__":
    for src in sources():
        print(f"wrote {build(src).relative_to(HERE.parent)}", file=sys.stderr)
