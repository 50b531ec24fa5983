"""A local multi-node PostgreSQL setup for tests and benchmarks: one coordinator and N shard clusters
on this machine, each a tests/pgcluster.py Cluster (own data directory, port and socket directory),
started with what flock.distribute needs: wal_level=logical (the coordinator publishes the model
catalog, the shards subscribe), replication slots, WAL senders and logical replication workers.

Cluster.start registers stop() with atexit, so the clusters go away even when a run fails;
MultiNode.stop() stops them all and is idempotent.
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from pgcluster import Cluster  # noqa: E402

DISTRIBUTED_SETTINGS = {
    "wal_level": "logical",
    "max_replication_slots": "16",
    "max_wal_senders": "16",
    "max_logical_replication_workers": "8",
}


def conninfo(node, dbname):
    """How any node (and a client) reaches `node`: its unix socket directory, user postgres."""
    return f"host={node.sockdir} port={node.port} user=postgres dbname={dbname}"


class MultiNode:
    """One coordinator and `shards` shard clusters, each named by its cluster_name."""

    def __init__(self, shards=3, settings=None):
        merged = dict(DISTRIBUTED_SETTINGS, **(settings or {}))
        self.coordinator = Cluster("flock-coord", dict(merged, cluster_name="coord"))
        self.shards = [Cluster(f"flock-shard{i + 1}", dict(merged, cluster_name=f"shard{i + 1}"))
                       for i in range(shards)]

    @property
    def nodes(self):
        return [self.coordinator] + self.shards

    def start(self):
        try:
            for n in self.nodes:
                n.start()
        except Exception:
            self.stop()
            raise
        return self

    def stop(self):
        for n in self.nodes:
            n.stop()
