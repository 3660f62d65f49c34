"""Markdown -> HTML for the report (the data card), through the maintained ``markdown`` package.

Two things the report needs on top of plain rendering: relative links go through a resolver (the report
never links to a file that is not there: unresolved links keep their text only), and headings shift down
(the card's ``#`` sits under the report's own ``<h2>``).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable

import markdown
from markdown.extensions import Extension
from markdown.treeprocessors import Treeprocessor

#: links kept as they are: web and mail addresses, and anchors in the same page
EXTERNAL_PREFIXES = ("http:", "https:", "mailto:", "#")


class _ReportTree(Treeprocessor):
    def __init__(self, md: markdown.Markdown, resolve_link: Callable[[str], str | None], heading_offset: int):
        super().__init__(md)
        self.resolve_link = resolve_link
        self.heading_offset = heading_offset

    def run(self, root: ET.Element) -> None:
        for parent in root.iter():
            for k, child in enumerate(list(parent)):
                if child.tag in {f"h{n}" for n in range(1, 7)}:
                    child.tag = f"h{min(6, int(child.tag[1]) + self.heading_offset)}"
                elif child.tag == "a":
                    self._link(parent, k, child)

    def _link(self, parent: ET.Element, index: int, link: ET.Element) -> None:
        href = link.get("href", "")
        if href.startswith(EXTERNAL_PREFIXES):
            return
        target = self.resolve_link(href)
        if target is not None:
            link.set("href", target)
            return
        # no target: keep the label as a plain span, so the text stays where it was
        link.tag = "span"
        link.attrib.clear()


class _ReportExtension(Extension):
    def __init__(self, resolve_link: Callable[[str], str | None], heading_offset: int):
        super().__init__()
        self.resolve_link = resolve_link
        self.heading_offset = heading_offset

    def extendMarkdown(self, md: markdown.Markdown) -> None:  # noqa: N802 (the markdown package's API)
        md.treeprocessors.register(_ReportTree(md, self.resolve_link, self.heading_offset), "report_links", 5)


def render_markdown(
    text: str, resolve_link: Callable[[str], str | None] | None = None, heading_offset: int = 1
) -> str:
    """Markdown (GitHub-style tables and fenced code included) -> HTML, offline.

    Relative links go through ``resolve_link`` (return the new href, or None to keep the text without a
    link); headings move ``heading_offset`` levels down (at most ``<h6>``).
    """
    extension = _ReportExtension(resolve_link or (lambda url: None), heading_offset)
    return markdown.markdown(text, extensions=["tables", "fenced_code", extension], output_format="html")
