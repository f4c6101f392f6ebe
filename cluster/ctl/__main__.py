"""``python -m cluster.ctl``: the same as the ``quorumctl`` console script."""

from cluster.ctl.main import main

main()
