"""MkDocs hook: render Sphinx cross-reference roles left in numpydoc docstrings.

The docstrings follow numpydoc, which Sphinx reads with roles such as ``:class:`Slide``` or
``:doc:`/conventions```. mkdocstrings does not interpret roles, so without this hook the page
shows the role name before the code span (":meth:close"). This hook drops the role prefix
and turns ``:doc:`/page``` into a link to that page of this site.
"""

from __future__ import annotations

import re
from typing import Any

from mkdocs.utils import get_relative_url

_ROLE = re.compile(
    r":(?:py:)?(?P<role>class|meth|func|attr|data|obj|mod|exc|doc):<code>(?P<target>[^<]+)</code>"
)


def on_page_content(html: str, page: Any, config: Any, files: Any) -> str:
    def replace(match: re.Match[str]) -> str:
        role, target = match["role"], match["target"]
        if role == "doc":
            name = target.strip("/").removesuffix(".md")
            doc = files.get_file_from_path(f"{name}.md")
            if doc is not None:
                url = get_relative_url(doc.url, page.url)
                title = name.rsplit("/", 1)[-1].replace("-", " ").replace("_", " ").capitalize()
                return f'<a href="{url}">{title}</a>'
        if target.startswith("~"):  # Sphinx shows only the last component
            target = target.rsplit(".", 1)[-1]
        return f"<code>{target.lstrip('.')}</code>"

    return _ROLE.sub(replace, html)
