"""``hubertkit train`` whose rank 1 is killed (SIGKILL) right after the save at update
``HUBERTKIT_DIE_AT``, once (a marker file remembers it): what a node failure does to a
``torchrun --max-restarts`` job. For tests/test_distributed.py.

Rank 1 leaves ``save`` as soon as its random state is gathered, while rank 0 may still be
writing the checkpoint; so rank 0 says when the file is written (``<marker>.saved``) and
rank 1 dies only then, else torchrun could stop rank 0 mid-write and the restart would
resume from the save before."""

import os
import signal
import sys
import time
from pathlib import Path

from hubertkit.cli import main
from hubertkit.train.checkpoint import Checkpointer

save = Checkpointer.save


def save_then_die(self, at, *args, **kwargs):
    save(self, at, *args, **kwargs)
    marker = Path(os.environ["HUBERTKIT_DIE_MARKER"])
    saved = marker.with_suffix(".saved")
    if at.num_updates != int(os.environ["HUBERTKIT_DIE_AT"]) or marker.exists():
        return
    if self.dist.rank == 0:
        saved.write_text("")
    elif self.dist.rank == 1:
        deadline = time.monotonic() + 60
        while not saved.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
        marker.write_text(f"killed at update {at.num_updates}\n")
        os.kill(os.getpid(), signal.SIGKILL)


Checkpointer.save = save_then_die
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
