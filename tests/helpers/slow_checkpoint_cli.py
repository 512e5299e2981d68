"""`lapnet ARGS...`, the real command line, with one change: flushing a temp file of
last.safetensors to disk takes half a second longer, so that a test can SIGKILL the
process while a checkpoint is being written (between the temp file and the rename).

Usage: python slow_checkpoint_cli.py text train ... (the arguments of `lapnet`).
"""

import os
import sys
import time

_real_fsync = os.fsync


def _slow_fsync(fd: int) -> None:
    try:
        name = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:  # no /proc: slow every flush a little instead
        name, delay = "", 0.05
    else:
        delay = 0.5 if os.path.basename(name).startswith(".last.safetensors.") else 0.0
    time.sleep(delay)
    _real_fsync(fd)


os.fsync = _slow_fsync

from lapnet.cli import main  # noqa: E402

main(sys.argv[1:])
