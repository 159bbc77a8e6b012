"""Puts a bundle folder back in order when the process writing it dies before finishing, even by SIGKILL.

`scenecap convert` builds each bundle in a hidden folder beside the destination and swaps it in at the end. A
process killed with SIGKILL (the OOM killer, `kill -9`, a CI timeout) runs no cleanup code, so the writer starts
this small process first and keeps a pipe to it. When the writer is done it writes b"done"; if the pipe closes
without that, the writer died mid-way and this process makes the destination whole: the previous bundle or the
new one, never neither, and no temporary folder left beside it.

Only `bundle_writer` starts it: python -m scenecap.convert.janitor TARGET TMP OLD
Deliberately light (standard library only): it starts in a few tens of milliseconds.
"""

from __future__ import annotations

import shutil
import signal
import sys
from pathlib import Path

DONE = b"done"


def recover(target: Path, tmp: Path, old: Path) -> None:
    """After a writer died at any step: the destination holds a complete bundle and the temporaries are gone.

    `tmp` holds the new bundle being built, or the previous one once it was swapped out. `old` exists only on
    systems without an atomic exchange, between moving the previous bundle aside and moving the new one in.
    """
    if not target.exists() and old.exists():
        old.rename(target)  # died between the two renames: the previous bundle goes back
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def main(argv: list[str]) -> int:
    # Ctrl-C and SIGTERM are for the writer, which then cleans up itself and says "done"; the janitor must
    # outlive it in every other case.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    target, tmp, old = (Path(a) for a in argv[1:4])
    if sys.stdin.buffer.read() != DONE:  # EOF without "done": the writer is gone
        recover(target, tmp, old)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
