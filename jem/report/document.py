"""A tiny document model rendered twice: GitHub markdown (images as relative links) and one
self-contained HTML page (images inlined as base64 data URIs, no external resources)."""

from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; max-width: 1150px;
       margin: 2em auto; padding: 0 1em; color: #1d1d1f; line-height: 1.45; }
h1 { font-size: 1.7em; border-bottom: 2px solid #ddd; padding-bottom: .2em; }
h2 { font-size: 1.3em; margin-top: 1.8em; border-bottom: 1px solid #eee; padding-bottom: .15em; }
table { border-collapse: collapse; margin: .6em 0 1em; font-size: .92em; }
th, td { border: 1px solid #d0d7de; padding: .3em .7em; }
th { background: #f6f8fa; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.bad { color: #b00020; background: #fdecea; font-weight: 700; }
code { background: #f3f3f3; padding: 0 .25em; border-radius: 3px; }
.warn { background: #fdecea; border: 2px solid #d62828; color: #8a1111; padding: .7em 1em;
        border-radius: 6px; font-weight: 600; }
.note { color: #666; font-size: .92em; }
figure { margin: .8em 0 1.2em; }
figure img { width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #555; font-size: .9em; }
"""


def _inline_html(text: str) -> str:
    """Escape, then turn `code` and **bold** into tags (the only markdown used in paragraphs)."""
    out = html.escape(text, quote=False)
    out = re.sub(r"`([^`]+)`", r"<code>\1</code>", out)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", out)


def _html_cell(text: str, numeric: bool, bad: bool) -> str:
    cls = " ".join(name for name, on in (("num", numeric), ("bad", bad)) if on)
    return f'<td class="{cls}">{_inline_html(text)}</td>' if cls else f"<td>{_inline_html(text)}</td>"


def _md_cell(text: str) -> str:
    return text.replace("|", "\\|")


@dataclass
class Document:
    title: str
    blocks: list[tuple] = field(default_factory=list)

    def heading(self, text: str) -> None:
        self.blocks.append(("h2", text))

    def para(self, text: str) -> None:
        self.blocks.append(("p", text))

    def note(self, text: str) -> None:
        self.blocks.append(("note", text))

    def warn(self, text: str) -> None:
        self.blocks.append(("warn", text))

    def table(self, header: list[str], rows: list[list[str]], numeric_from: int = 1,
              bad: frozenset[tuple[int, int]] = frozenset()) -> None:
        """Columns from ``numeric_from`` on are right-aligned; ``bad`` (row, column) cells are
        highlighted (red in HTML, bold with a down arrow in markdown)."""
        self.blocks.append(("table", header, rows, numeric_from, bad))

    def image(self, name: str, alt: str, caption: str = "") -> None:
        """``name`` is a PNG file next to the report."""
        self.blocks.append(("img", name, alt, caption))

    def images(self) -> list[str]:
        return [b[1] for b in self.blocks if b[0] == "img"]

    def markdown(self) -> str:
        md = [f"# {self.title}", ""]
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                md += [f"## {block[1]}", ""]
            elif kind in ("p", "note"):
                md += [block[1] if kind == "p" else f"*{block[1]}*", ""]
            elif kind == "warn":
                md += [f"> **Warning:** {block[1]}", ""]
            elif kind == "table":
                _, header, rows, num, bad = block
                align = ["---" if i < num else "---:" for i in range(len(header))]
                md += ["| " + " | ".join(map(_md_cell, header)) + " |", "|" + "|".join(align) + "|"]
                md += ["| " + " | ".join(f"**{_md_cell(c)} ▼**" if (k, i) in bad else _md_cell(c)
                                         for i, c in enumerate(r)) + " |" for k, r in enumerate(rows)] + [""]
            elif kind == "img":
                _, name, alt, caption = block
                md += [f"![{alt}]({name})", ""] + ([f"*{caption}*", ""] if caption else [])
        return "\n".join(md)

    def html(self, folder: Path) -> str:
        """The page, with every image read from ``folder`` and inlined."""
        body = [f"<h1>{_inline_html(self.title)}</h1>"]
        for block in self.blocks:
            kind = block[0]
            if kind == "h2":
                body.append(f"<h2>{_inline_html(block[1])}</h2>")
            elif kind == "p":
                body.append(f"<p>{_inline_html(block[1])}</p>")
            elif kind == "note":
                body.append(f'<p class="note">{_inline_html(block[1])}</p>')
            elif kind == "warn":
                body.append(f'<p class="warn">Warning: {_inline_html(block[1])}</p>')
            elif kind == "table":
                _, header, rows, num, bad = block
                head = "".join(f"<th>{_inline_html(h)}</th>" for h in header)
                trs = ["<tr>" + "".join(_html_cell(c, i >= num, (k, i) in bad) for i, c in enumerate(r)) + "</tr>"
                       for k, r in enumerate(rows)]
                body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(trs)}</tbody></table>")
            elif kind == "img":
                _, name, alt, caption = block
                data = base64.b64encode((folder / name).read_bytes()).decode("ascii")
                cap = f"<figcaption>{_inline_html(caption)}</figcaption>" if caption else ""
                body.append(f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
                            f'data-name="{html.escape(name)}">{cap}</figure>')
        return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
                f"<title>{html.escape(self.title)}</title><style>{CSS}</style></head>\n<body>\n"
                + "\n".join(body) + "\n</body></html>\n")
