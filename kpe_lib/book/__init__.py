"""The book machinery: what turns the chapter sources into the book.

- :mod:`.scales`: the scale names, the project root, chapter sources and parameter files, defined once;
- :mod:`.parameters`: the one reader of a chapter's parameters cell, and the parameter check;
- :mod:`.context`: the chapter context every chapter opens with (threads, seed, check, style, cache,
  stage timer) and closes with (results and timings);
- :mod:`.results`: ``results/<scale>/<chapter>.json``;
- :mod:`.scoreboard` and :mod:`.pages`: the reproduction scoreboard and the generated pages;
- :mod:`.runner` and :mod:`.cli`: papermill execution with stamps, the Jupyter Book build,
  ``python -m kpe_lib``.
"""
