"""Small Sphinx fixes for the companion book (a local extension listed in _config.yml).

- jupyter-book 1.0.4 runs sphinx-thebe's set-up twice, which writes its inline configuration script
  (``const THEBE_JS_URL = ...``) twice into every page; the second copy throws "Identifier has already
  been declared" in the browser console. Pages here keep the first copy of any repeated script.
"""
from __future__ import annotations


def _script_key(script) -> tuple:
    attributes = getattr(script, "attributes", {}) or {}
    return (str(getattr(script, "filename", script) or ""), str(attributes.get("body") or ""))


def drop_repeated_scripts(app, pagename, templatename, context, doctree) -> None:
    """Keep the first of identical ``script_files`` entries (same file name and inline body)."""
    scripts = context.get("script_files")
    if not scripts:
        return
    seen, unique = set(), []
    for script in scripts:
        key = _script_key(script)
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", drop_repeated_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True, "version": "0.1"}
