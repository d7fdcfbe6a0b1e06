"""Renderer: the HTML part is optional, but a broken template is an error, never a silent skip."""

from __future__ import annotations

from pathlib import Path

import pytest
from jinja2 import TemplateNotFound, TemplateSyntaxError

from maild.replies.render import Renderer


def _desk_templates(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = tmp_path / "en" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    return tmp_path


def test_a_template_without_an_html_part_renders_text_only(tmp_path: Path) -> None:
    renderer = Renderer(_desk_templates(tmp_path, {"hello.txt.j2": "Hello {{ name }}"}))
    assert renderer.render("en", "hello", name="Anna") == ("Hello Anna", None)


def test_an_html_part_is_rendered_escaped(tmp_path: Path) -> None:
    files = {"hello.txt.j2": "Hello {{ name }}", "hello.html.j2": "<p>{{ name }}</p>"}
    renderer = Renderer(_desk_templates(tmp_path, files))
    assert renderer.render("en", "hello", name="<b>") == ("Hello <b>", "<p>&lt;b&gt;</p>")


def test_a_syntax_error_in_the_html_part_surfaces(tmp_path: Path) -> None:
    files = {"hello.txt.j2": "Hello {{ name }}", "hello.html.j2": "<p>{% if name %}{{ name }}</p>"}
    renderer = Renderer(_desk_templates(tmp_path, files))
    with pytest.raises(TemplateSyntaxError):
        renderer.render("en", "hello", name="Anna")


def test_a_missing_include_in_the_html_part_is_not_taken_for_no_html_part(tmp_path: Path) -> None:
    files = {"hello.txt.j2": "Hello", "hello.html.j2": '<p>{% include "en/gone.html.j2" %}</p>'}
    renderer = Renderer(_desk_templates(tmp_path, files))
    with pytest.raises(TemplateNotFound, match="gone"):
        renderer.render("en", "hello")
