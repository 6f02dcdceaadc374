"""Griffe extensions for the API reference (mkdocs.yml loads them; not part of the package).

embedopt's docstrings are Google style with Sphinx cross-reference roles (``:class:`~embedopt.Embedder```) and
``#:`` comments on module constants. mkdocstrings reads neither, so:

* :class:`SphinxRoles` rewrites each role as a mkdocstrings cross-reference, so the reference links it and
  ``mkdocs build --strict`` fails when one points nowhere (a private name, such as the ``_embed`` hook, stays
  plain code: it has no page); it also drops rST directive lines (``.. code-block:: python``, the ``::`` that
  opens a literal block), splits ``a, b: text`` argument entries into one entry per name, and fences ``>>>``
  examples.
* :class:`CommentDocstrings` gives a module constant documented with ``#:`` comments those lines as docstring.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import griffe

_ROLE = re.compile(r":(?:class|func|meth|attr|data|mod|exc|obj|const):`(~?)([\w.]+)(?:\(\))?`")
_MULTI = re.compile(r"^(?P<indent>[ \t]+)(?P<names>\w+(?:,[ \t]*\w+)+):(?P<rest>.*)$")
_DIRECTIVE = re.compile(r"^[ \t]*\.\. code-block::.*\n", re.MULTILINE)


def _role(match: re.Match[str]) -> str:
    tilde, path = match.groups()
    title = path.rsplit(".", 1)[-1] if tilde else path
    if any(part.startswith("_") and not part.startswith("__") for part in path.split(".")):
        return f"`{title}`"
    return f"[`{title}`][{path}]"


def _split_names(text: str) -> str:
    """Google style takes one name per argument entry: ``a, b: text`` becomes an entry for each name."""
    lines = text.split("\n")
    out: list[str] = []
    i = 0
    while i < len(lines):
        m = _MULTI.match(lines[i])
        if not m:
            out.append(lines[i])
            i += 1
            continue
        indent = m["indent"]
        body = [m["rest"]]
        i += 1
        while i < len(lines) and lines[i].startswith(indent + " ") and lines[i].strip():
            body.append("\n" + lines[i])
            i += 1
        out.extend(f"{indent}{name.strip()}:{''.join(body)}" for name in m["names"].split(","))
    return "\n".join(out)


def _doctest_fences(text: str) -> str:
    """``>>>`` examples (with their ``...`` continuations) as a fenced ``pycon`` block."""
    return re.sub(r"(?m)^((?:(?:>>>|\.\.\.)(?: .*)?\n?)+)", lambda m: f"```pycon\n{m[1].rstrip()}\n```\n", text)


class SphinxRoles(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is None:
            return
        text = _ROLE.sub(_role, obj.docstring.value)
        text = _DIRECTIVE.sub("", text)
        text = re.sub(r"::\n\n", ":\n\n", text)
        obj.docstring.value = _doctest_fences(_split_names(text))

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self.on_object(obj=pkg)  # on_object skips the package itself


class CommentDocstrings(griffe.Extension):
    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        path = obj.filepath
        if not obj.is_attribute or obj.docstring is not None or obj.lineno is None or not isinstance(path, Path):
            return
        if path not in obj.lines_collection:
            return
        lines = obj.lines_collection[path]
        comment: list[str] = []
        i = obj.lineno - 2
        while i >= 0 and lines[i].lstrip().startswith("#:"):
            comment.insert(0, lines[i].lstrip()[2:].strip())
            i -= 1
        if comment:
            obj.docstring = griffe.Docstring(" ".join(comment), lineno=i + 2, parent=obj)
