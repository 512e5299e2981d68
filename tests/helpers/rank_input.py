"""`lapnet ARGS` where the argument TEXT is a good file on rank 0 and a missing one on rank 1
(a second node without the corpus): one rank fails while the other is already training.

Usage: torchrun --nproc_per_node=2 rank_input.py GOOD_FILE lapnet-args... (with TEXT among them)
"""

import os
import sys

from lapnet.cli import main

good, args = sys.argv[1], sys.argv[2:]
path = good if os.environ.get("RANK", "0") == "0" else good + ".missing"
main([path if a == "TEXT" else a for a in args])
