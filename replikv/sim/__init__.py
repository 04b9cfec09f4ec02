"""Deterministic simulation of single-leader replication with failover (MISSION V3).

The replication decisions of the real node run here unchanged (core/election.py for
epochs, votes, leases and divergence; core/replication.py for acknowledgement watermarks),
inside one process, with a simulated network (delay, drop, duplicate, reorder, partition),
a simulated clock and simulated crashes, all drawn from one seed. A failing seed replays
exactly: ``python -m replikv.sim --seed N --trace``.
"""
