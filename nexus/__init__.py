"""The composition root: the ``nexus`` command and the embedded single-node runner.

It is the one package allowed to import every other one; nothing imports it.
"""
