"""``python -m kpe_lib``: the book's command line (:mod:`kpe_lib.book.cli`)."""
import sys

from kpe_lib.book.cli import main

if __name__ == "__main__":
    sys.exit(main())
