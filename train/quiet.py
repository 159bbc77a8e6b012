"""TensorFlow's own chatter while training, exporting and converting, kept off the terminal unless -v.

'INFO tensorflow: Assets written to ...' (its Python logger) and the converter's 'fully_quantize: 0,
inference_type: 6, ...' (printed by C++ straight to fd 2) read to a newcomer as something gone wrong. With -v
(debug logging) both are shown as they are.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator

from scenecap.native_stderr import caught_fd2

log = logging.getLogger("scenecap.tensorflow")


def _verbose() -> bool:
    return logging.getLogger().isEnabledFor(logging.DEBUG)


def quiet_tensorflow_logger() -> None:
    """Only TensorFlow's warnings and errors reach the log, unless -v."""
    if not _verbose():
        logging.getLogger("tensorflow").setLevel(logging.WARNING)


@contextlib.contextmanager
def native_stderr_to_debug() -> Iterator[None]:
    """Catch what native code prints to fd 2 inside the block; it goes to the debug log (shown with -v)."""
    if _verbose():
        yield
        return
    with caught_fd2() as lines:
        yield
    for line in lines:
        log.debug("%s", line)
