"""Command line: ``python -m kpe_lib`` (or the ``kpe`` script) runs chapters and builds the book.

    python -m kpe_lib run [CHAPTERS ...] [--scale cpu] [--device cpu] [--force] [--out DIR] [--set K=V ...]
    python -m kpe_lib build [CHAPTERS ...] [--scale cpu] [--device cpu] [--force] [--out DIR] [--set K=V ...]
    python -m kpe_lib list

``run`` executes chapter sources with papermill into ``<out>/book/chapters`` (see
:mod:`kpe_lib.book.runner`); ``build`` does the same and then builds the HTML book into
``<out>/_build/html`` with warnings as errors. CHAPTERS are names (``01_kpe_2d``), numbers (``01``)
or slugs (``kpe_2d``); none means every chapter. ``--set celeba_bf16=true`` overrides one parameter of
the scale's file (the value is read as YAML); the chapter checks its type. The exit status is 0 only if
everything succeeded.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any, Sequence

from kpe_lib.book import runner


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kpe", description="Run the KPE companion's chapters and build its book.")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, text in (("run", "execute chapters with papermill"),
                       ("build", "execute chapters, then build the HTML book (warnings are errors)")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("chapters", nargs="*", help="chapter names, numbers or slugs (default: all)")
        p.add_argument("--scale", default="cpu", choices=runner.SCALES, help="parameter file to use (default: cpu)")
        p.add_argument("--device", default="cpu", help="torch device passed to every chapter (default: cpu)")
        p.add_argument("--force", action="store_true", help="re-execute chapters whose stamp is unchanged")
        p.add_argument("--out", default=None,
                       help="folder receiving book/chapters and _build/html (default: the project root); "
                            "another folder gets a staging copy of the book sources")
        p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override one parameter of the scale's file, e.g. --set celeba_bf16=true "
                            "(the value is parsed as YAML; repeatable)")
    sub.add_parser("list", help="list the chapter sources")
    return parser


def _overrides(items: Sequence[str]) -> dict[str, Any]:
    """``["k=v", ...]`` -> ``{k: yaml(v)}``; ValueError naming a malformed item."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip().isidentifier():
            raise ValueError(f"--set takes KEY=VALUE with KEY a parameter name, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ValueError(f"--set {key.strip()}: cannot read {value!r} as a YAML value ({err})") from err
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m kpe_lib`` and the ``kpe`` console script; returns the exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "list":
            for chapter in runner.discover_chapters():
                print(f"{chapter.name}  {chapter.source}")
            return 0
        kwargs = dict(scale=args.scale, device=args.device, out=args.out, force=args.force,
                      overrides=_overrides(args.overrides))
        if args.command == "run":
            return 0 if runner.run_chapters(args.chapters, **kwargs).ok else 1
        return 0 if runner.build_book(args.chapters, **kwargs).ok else 1
    except ValueError as err:
        print(f"kpe: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
