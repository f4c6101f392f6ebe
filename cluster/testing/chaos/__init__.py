"""Chaos runs for Quorum and etcd: a recorded history of client operations, a linearizability checker for
KV against an etcd model, a watch checker, seeded fault injectors and a runner
(``python -m cluster.testing.chaos --seed N``).

The checkers (`history`, `model`, `linearizability`, `watchcheck`) import nothing but the standard
library, so they can judge a history recorded by anything.
"""
