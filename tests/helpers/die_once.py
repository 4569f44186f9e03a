"""``hubertkit train`` whose rank 1 is killed (SIGKILL) right after the save at update
``HUBERTKIT_DIE_AT``, once (a marker file remembers it): what a node failure does to a
``torchrun --max-restarts`` job. For tests/test_distributed.py."""

import os
import signal
import sys
from pathlib import Path

from hubertkit.cli import main
from hubertkit.train.checkpoint import Checkpointer

save = Checkpointer.save


def save_then_die(self, at, *args, **kwargs):
    save(self, at, *args, **kwargs)
    marker = Path(os.environ["HUBERTKIT_DIE_MARKER"])
    if self.dist.rank == 1 and at.num_updates == int(os.environ["HUBERTKIT_DIE_AT"]) and not marker.exists():
        marker.write_text(f"killed at update {at.num_updates}\n")
        os.kill(os.getpid(), signal.SIGKILL)


Checkpointer.save = save_then_die
if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
