"""The cluster: which agents exist and are alive (membership: static, or ZooKeeper), where each chunk goes
(placement), and the background work that keeps every chunk on R agents (repair, drain, scrub, GC across agents,
each run by exactly one node through a ZooKeeper election).

Sits under ``data/`` and beside ``meta/``: it never imports ``s3/`` or ``http/``.
"""
