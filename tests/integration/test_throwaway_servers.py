"""The throwaway server groups the tests and benches start (engine/servers.py): distinct ports,
and nothing left running when a start fails."""

from __future__ import annotations

import pytest

from engine.servers import ServerError, ThrowawayRedis, ThrowawayRedisCluster, free_ports

pytestmark = pytest.mark.timeout(120)


def test_free_ports_are_distinct() -> None:
    ports = free_ports(64)
    assert len(set(ports)) == 64


def test_a_cluster_that_cannot_form_leaves_no_server_running() -> None:
    """A port of the list held by another server (as a bus port chosen apart could be): the node
    cannot bind it, the cluster cannot be created, and the nodes that did start are stopped."""
    cluster = ThrowawayRedisCluster(masters=3, replicas=0)
    squatter = ThrowawayRedis(port=cluster.ports[1]).start()  # a Redis outside any cluster
    try:
        with pytest.raises(ServerError, match="not configured as a cluster node"):
            cluster.start()
        assert cluster.procs == {} and cluster.dir is None
    finally:
        squatter.cleanup()
        cluster.cleanup()
