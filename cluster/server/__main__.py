"""`python -m cluster.server` runs the member like the `quorum` command."""

from cluster.server.main import main

main()
