"""`python -m lapnet ...` (what `torchrun -m lapnet ...` runs) is the `lapnet` command."""

from lapnet.cli import main

main()
