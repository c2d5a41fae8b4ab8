"""Self-contained HTML report of a study: one page, figures embedded as PNG, no network access.

A :class:`Report` collects sections (headings with paragraphs, key/value tables, data tables
and figures) and writes a single ``report.html`` whose only external references are none:
images are base64 data URIs and the style sheet is inline, so the page opens the same from
a laptop, a cluster or an e-mail attachment. Interactive views (nilearn ``view_surf``) are
optional; they embed their own scripts.
"""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 1100px; padding: 1em 2em;
       color: #1d2330; background: #fbfbfd; }
h1 { border-bottom: 3px solid #3b6ea8; padding-bottom: .3em; }
h2 { color: #3b6ea8; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; font-size: .9em; }
th, td { border: 1px solid #ccd3de; padding: .25em .6em; text-align: left; }
th { background: #e8eef6; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #dde3eb; }
figcaption { font-size: .85em; color: #556; }
.note { background: #fff7e0; border-left: 4px solid #e0a800; padding: .5em 1em; }
pre { background: #f0f2f6; padding: .8em; overflow-x: auto; font-size: .8em; }
nav a { margin-right: 1em; }
"""


def figure_png(fig) -> str:
    """A matplotlib figure as a ``data:image/png;base64`` URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _cell(value: Any) -> str:
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, (int,)) and not isinstance(value, bool):
        return f'<td class="num">{value}</td>'
    return f"<td>{html.escape(str(value))}</td>"


@dataclass
class Section:
    """One titled part of the page, holding already-rendered HTML blocks."""

    title: str
    anchor: str
    blocks: list[str] = field(default_factory=list)

    def text(self, paragraph: str, note: bool = False) -> "Section":
        css = ' class="note"' if note else ""
        self.blocks.append(f"<p{css}>{html.escape(paragraph)}</p>")
        return self

    def key_values(self, pairs: Mapping[str, Any]) -> "Section":
        rows = "".join(f"<tr><th>{html.escape(str(k))}</th>{_cell(v)}</tr>" for k, v in pairs.items())
        self.blocks.append(f"<table>{rows}</table>")
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[Any]],
              caption: str = "") -> "Section":
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
        body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
        cap = f"<caption>{html.escape(caption)}</caption>" if caption else ""
        self.blocks.append(f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
        return self

    def figure(self, fig, caption: str) -> "Section":
        self.blocks.append(f'<figure><img alt="{html.escape(caption)}" src="{figure_png(fig)}">'
                           f"<figcaption>{html.escape(caption)}</figcaption></figure>")
        return self

    def raw_html(self, fragment: str) -> "Section":
        """Trusted HTML (e.g. a nilearn interactive view's ``get_iframe()``)."""
        self.blocks.append(fragment)
        return self

    def provenance(self, block: Mapping[str, Any]) -> "Section":
        self.blocks.append(f"<pre>{html.escape(json.dumps(block, indent=2, default=str))}</pre>")
        return self


@dataclass
class Report:
    """A study report page; add sections in reading order, then :meth:`write`."""

    title: str
    sections: list[Section] = field(default_factory=list)

    def section(self, title: str) -> Section:
        anchor = "s" + str(len(self.sections) + 1)
        self.sections.append(Section(title, anchor))
        return self.sections[-1]

    def render(self) -> str:
        nav = "".join(f'<a href="#{s.anchor}">{html.escape(s.title)}</a>' for s in self.sections)
        body = "".join(f'<section id="{s.anchor}"><h2>{html.escape(s.title)}</h2>'
                       + "".join(s.blocks) + "</section>" for s in self.sections)
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{_STYLE}</style></head>"
                f"<body><h1>{html.escape(self.title)}</h1><nav>{nav}</nav>{body}</body></html>\n")

    def write(self, path: str | Path) -> Path:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(self.render(), encoding="utf-8")
        return path
