"""The PDF of a report, typeset by Typst from the report's own HTML.

The HTML (``render.py``) is the one source of the report's content; this module reads it back
(it is our own, small HTML: headings, paragraphs, tables, lists, figures and a few classes of
``span``) and lays the same text out with the Typst compiler, in-process. WeasyPrint took
17-20 s of CPU for the 46 pages of a 600-step run; Typst takes about 1 s for the same content
(39 pages; benchmarks/report_render.py).

Every piece of text is passed to Typst as a string literal in code mode, never as markup, so
nothing a sequence, a station file or a device says can be read as a Typst command. Fonts come
only from the system's DejaVu folder (Debian ``fonts-dejavu-core``), images from a temporary
folder that is the compiler's root: nothing is fetched, no package is imported.
"""

from __future__ import annotations

import base64
import re
import tempfile
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")

# Colours of the report's CSS (render.py), by class.
_FILL = {
    "PASS": "#1e7e34",
    "FAIL": "#c82333",
    "ERROR": "#b35900",
    "ABORTED": "#6f42c1",
    "SKIPPED": "#6c757d",
    "INCOMPLETE": "#444444",
}
_VOID = frozenset({"br", "img", "meta", "hr", "link"})


@dataclass
class Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(c if isinstance(c, str) else c.text() for c in self.children)

    def find(self, predicate: object) -> Node | None:
        for c in self.children:
            if isinstance(c, Node):
                if predicate(c):  # type: ignore[operator]
                    return c
                found = c.find(predicate)
                if found is not None:
                    return found
        return None


class _Tree(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("root")
        self.stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self.stack[-1].children.append(node)
        if tag not in _VOID:
            self.stack.append(node)

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, 0, -1):
            if self.stack[i].tag == tag:
                del self.stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self.stack[-1].children.append(data)


def parse(html_text: str) -> Node:
    tree = _Tree()
    tree.feed(html_text)
    tree.close()
    return tree.root


def _s(text: str) -> str:
    """A Typst string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


_SPACES = re.compile(r"[ \t\r\n\f]+")


def _collapse(text: str) -> str:
    # HTML's white-space rule: every run of spaces, tabs and newlines is one space (a no-break
    # space is not white space there, and stays).
    return _SPACES.sub(" ", text)


class _Writer:
    def __init__(self, images: Path) -> None:
        self.images = images
        self.count = 0

    def inline(self, nodes: list[Node | str]) -> str:
        """A code-mode expression joining the nodes' content ({ a; b; ... })."""
        parts: list[str] = []
        for i, c in enumerate(nodes):
            if isinstance(c, str):
                t = _collapse(c)
                if i == 0:
                    t = t.lstrip()
                if i == len(nodes) - 1:
                    t = t.rstrip()
                if t:
                    parts.append(_s(t))
            else:
                parts.append(self.node(c))
        parts = [p for p in parts if p]
        if len(parts) == 1:
            return parts[0]  # a lone string or call needs no block around it (a table has thousands)
        return "{" + "; ".join(parts) + "}" if parts else "[]"

    def node(self, n: Node) -> str:  # one branch per tag of the report's HTML
        tag, cls, body = n.tag, n.classes, n.children
        if tag in ("style", "title", "head", "meta", "script"):
            return ""
        if tag in ("html", "body", "main", "header", "footer", "root", "thead", "tbody"):
            return self.inline(body)
        if tag in ("b", "strong", "th"):
            return f"strong({self.inline(body)})"
        if tag == "br":
            return "linebreak()"
        if tag == "sub":
            return f"sub({self.inline(body)})"
        if tag == "code":
            return f'text(font: "DejaVu Sans Mono", size: 0.9em, {self.inline(body)})'
        if tag == "h1":
            return f"heading(level: 1, {self.inline(body)})"
        if tag == "h2":
            return f"heading(level: 2, {self.inline(body)})"
        if tag == "h3":
            return f"heading(level: 3, {self.inline(body)})"
        if tag == "span":
            return self.span(cls, self.inline(body))
        if tag == "p":
            return self.paragraph(cls, self.inline(body))
        if tag == "div":
            return self.box_block(cls, self.inline(body))
        if tag == "ul":
            items = [self.inline(li.children) for li in body if isinstance(li, Node) and li.tag == "li"]
            return "list(" + ", ".join(items) + ")" if items else ""
        if tag == "li":
            return self.inline(body)
        if tag == "table":
            return self.table(n)
        if tag == "figure":
            return self.figure(n)
        if tag == "figcaption":
            return f'text(size: 8pt, fill: rgb("#444"), {self.inline(body)})'
        if tag == "img":
            return self.image(n)
        return self.inline(body)  # any other element: its content

    def span(self, cls: set[str], inner: str) -> str:
        if "verdict" in cls or "o" in cls:
            colour = next((_FILL[c] for c in cls if c in _FILL), "#6c757d")
            size = "" if "verdict" in cls else "size: 8pt, "
            weight = 'weight: "bold", ' if "verdict" in cls else ""
            return (
                f'box(fill: rgb("{colour}"), inset: (x: 0.4em, y: 0.15em), outset: (y: 0.1em), radius: 0.2em, '
                f"text(fill: white, {size}{weight}{inner}))"
            )
        if "na" in cls:
            return f'emph(text(fill: rgb("#666"), {inner}))'
        if "muted" in cls:
            return f'text(fill: rgb("#666"), {inner})'
        if "missing" in cls:
            return f'text(fill: rgb("#b00020"), weight: "bold", {inner})'
        if "hash" in cls:
            return f'text(font: "DejaVu Sans Mono", size: 7.5pt, {inner})'
        if "cl" in cls:
            return f'text(fill: rgb("#666"), weight: "regular", size: 7.5pt, {inner})'
        if "rec" in cls:
            return f'emph(text(fill: rgb("#444"), {inner}))'
        if "nb" in cls:
            return f"box({inner})"
        return inner

    def paragraph(self, cls: set[str], inner: str) -> str:
        if "stmt" in cls:
            return (
                f'block(width: 100%, stroke: (left: 3pt + rgb("#1f4e9c")), fill: rgb("#f6f8fb"), '
                f"inset: (x: 0.6em, y: 0.3em), {inner})"
            )
        if "end" in cls:
            return (
                f'block(width: 100%, above: 2em, stroke: (top: 2pt + rgb("#333")), inset: (top: 0.4em), '
                f"align(center, strong({inner})))"
            )
        if "muted" in cls:
            return f'block(text(fill: rgb("#666"), {inner}))'
        if "na" in cls:
            return f'block(emph(text(fill: rgb("#666"), {inner})))'
        return f"block({inner})"

    def box_block(self, cls: set[str], inner: str) -> str:
        styles = {
            "amend": ('2pt + rgb("#b35900")', "#fff6ec", ""),
            "nfi": ('3pt + rgb("#b00020")', "#fdecee", ""),
            "incomplete": ('3pt + rgb("#b00020")', "#fdecee", "strong"),
        }
        for name, (stroke, fill, wrap) in styles.items():
            if name in cls:
                body = f"{wrap}({inner})" if wrap else inner
                return f'block(width: 100%, stroke: {stroke}, fill: rgb("{fill}"), inset: (x: 0.7em, y: 0.5em), {body})'
        return f"block({inner})"

    def table(self, n: Node) -> str:
        rows: list[tuple[bool, list[Node]]] = []

        def collect(node: Node, head: bool) -> None:
            for c in node.children:
                if not isinstance(c, Node):
                    continue
                if c.tag == "tr":
                    rows.append((head, [x for x in c.children if isinstance(x, Node) and x.tag in ("td", "th")]))
                elif c.tag in ("thead", "tbody"):
                    collect(c, c.tag == "thead")

        collect(n, False)
        if not rows:
            return ""
        ncols = max(len(cells) for _, cells in rows)
        kv = "kv" in n.classes
        # As wide as the text (the CSS's width:100%): the last column takes what the others leave.
        columns = "(17em, 1fr)" if kv and ncols == 2 else f"(auto,) * {ncols - 1} + (1fr,)"

        def cell(c: Node) -> str:
            inner = self.inline(c.children)
            if c.tag == "th":
                return f'table.cell(fill: rgb("#f1f1f1"), strong({inner}))'
            return inner

        head = [cells for is_head, cells in rows if is_head]
        body = [cells for is_head, cells in rows if not is_head]
        out = [f"columns: {columns}"]
        if head:
            # Repeated at the top of every page the table runs onto, as a browser prints a thead.
            out.append("table.header(" + ", ".join(cell(c) for cells in head for c in cells) + ")")
        for cells in body:
            out += [cell(c) for c in cells] + ['""'] * (ncols - len(cells))
        return "table(" + ", ".join(out) + ")"

    def image(self, n: Node) -> str:
        src = n.attrs.get("src", "")
        prefix = "data:image/png;base64,"
        if not src.startswith(prefix):
            return ""  # the report embeds its figures; anything else would be a reference out of the document
        self.count += 1
        name = f"figure-{self.count}.png"
        (self.images / name).write_bytes(base64.b64decode(src[len(prefix) :]))
        return f'image("/{name}", width: 100%, alt: {_s(n.attrs.get("alt", ""))})'

    def figure(self, n: Node) -> str:
        inner = self.inline(n.children)
        return f"block(breakable: false, above: 0.8em, below: 0.8em, {inner})"


_PREAMBLE = """
#set document(title: {title})
#set page(paper: "a4", margin: (top: 22mm, bottom: 20mm, x: 15mm),
  header: text(8pt, fill: rgb("#444"), {{"Test report "; {rid}; h(1fr); {lab}}}),
  footer: context text(8pt, fill: rgb("#444"), {{"Report "; {rid}; h(1fr); {centre}; h(1fr);
    "page "; str(counter(page).get().first()); " of "; str(counter(page).final().first())}}))
#set text(font: "DejaVu Sans", size: 9.5pt, fill: rgb("#1b1b1b"), lang: "en", hyphenate: false)
#set par(leading: 0.45em, spacing: 0.6em)
#set block(spacing: 0.6em)
#set table(stroke: 0.5pt + rgb("#cccccc"), inset: (x: 0.4em, y: 0.25em), align: left + top)
#show table: set text(size: 8.5pt)
#show heading: set block(above: 1.2em, below: 0.5em)
#show heading.where(level: 1): set text(size: 16pt)
#show heading.where(level: 2): it => block(width: 100%, stroke: (bottom: 0.5pt + rgb("#bbbbbb")),
  inset: (bottom: 0.2em), text(size: 11.5pt, it.body))
#show heading.where(level: 3): set text(size: 10pt)
"""


def to_typst(html_text: str, images: Path) -> str:
    """The Typst source of the document; its images are written into ``images``."""
    root = parse(html_text)
    rid = root.find(lambda n: n.attrs.get("id") == "rid")
    lab = root.find(lambda n: n.attrs.get("id") == "labname")
    title = root.find(lambda n: n.tag == "title")
    # The report that lacks a mandatory item says so on every page (render.py, missing_mandatory).
    not_for_issue = root.find(lambda n: "nfi" in n.classes) is not None
    body = root.find(lambda n: n.tag == "body") or root
    preamble = _PREAMBLE.format(
        title=_s(title.text() if title else ""),
        rid=_s(rid.text().strip() if rid else ""),
        lab=_s(lab.text().strip() if lab else ""),
        centre='text(fill: rgb("#b00020"), weight: "bold", "NOT FOR ISSUE")' if not_for_issue else '""',
    )
    return preamble + "#" + _Writer(images).inline(body.children) + "\n"


def write_pdf(html_text: str, target: Path) -> Path:
    """The PDF of the report ``html_text`` at ``target``, written whole or not at all."""
    data = pdf_bytes(html_text)
    tmp = target.with_name(f".{target.name}.tmp")
    try:
        tmp.write_bytes(data)
        tmp.replace(target)
    finally:
        tmp.unlink(missing_ok=True)
    return target


def pdf_bytes(html_text: str) -> bytes:
    import typst

    if not (FONT_DIR / "DejaVuSans.ttf").is_file():
        # Typst would lay the text out in no font at all: a PDF without its words is no report.
        raise FileNotFoundError(f"{FONT_DIR / 'DejaVuSans.ttf'}: the report's font (Debian fonts-dejavu-core)")

    with tempfile.TemporaryDirectory(prefix="report-") as folder:
        root = Path(folder)
        source = to_typst(html_text, root)
        # Only the system's DejaVu: neither other system fonts nor the ones built into Typst.
        fonts = typst.Fonts(include_system_fonts=False, include_embedded_fonts=False, font_paths=[str(FONT_DIR)])
        compiler = typst.Compiler(root=str(root), font_paths=fonts, ignore_system_fonts=True)
        # Untagged: the tags of an accessible PDF make it 15 times larger and add nothing the text has not.
        out = compiler.compile(source.encode("utf-8"), format="pdf", pdf_tags=False)
    if not isinstance(out, bytes):
        raise TypeError(f"the typesetter returned {type(out).__name__}, not a PDF")
    return out
