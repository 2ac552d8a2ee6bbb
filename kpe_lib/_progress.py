"""Whether the library's tqdm bars are on: one rule for every long loop of the library."""
from __future__ import annotations

import os


def progress_enabled(progress: bool | None) -> bool:
    """An explicit choice wins; otherwise bars are on unless ``KPE_PROGRESS=0`` or ``CI`` is set.

    The book runner sets ``KPE_PROGRESS=0`` for the kernels it starts, so executed chapters and CI logs
    carry no bars.

    Example:
        >>> progress_enabled(False)
        False
    """
    if progress is not None:
        return bool(progress)
    return os.environ.get("KPE_PROGRESS", "1") != "0" and not os.environ.get("CI")
