"""`python -m irp.cli`: the same as the `irp` console script."""

from irp.cli import main

main()
