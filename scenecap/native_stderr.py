"""What native code (TensorFlow's C++, the TFLite converter) prints straight to fd 2, caught instead of shown.

Python's sys.stderr cannot hold it back: the text is written to the file descriptor underneath. The callers
decide what a caught line becomes (dropped as start-up noise, or a debug log line shown with -v).
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator


@contextlib.contextmanager
def caught_fd2() -> Iterator[list[str]]:
    """Within the block fd 2 goes to a temporary file; after it, the list holds the non-blank lines written."""
    lines: list[str] = []
    if sys.stderr is not None:
        sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            if sys.stderr is not None:
                sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(line for line in sink.read().decode("utf-8", "replace").splitlines() if line.strip())
