"""`RedisStore`: a store shared by every process that can reach one Redis deployment.

Built on redis-py's asyncio clients; the URL alone picks the deployment:

* `redis://`, `rediss://` (TLS), `unix://`: one server (`redis.asyncio.Redis`);
* `redis+sentinel://host:26379[,host:26379]/service_name[/db]`: the master of a Sentinel-monitored group
  (`redis.asyncio.sentinel.Sentinel.master_for`). Every new connection asks the sentinels where the master is,
  so after a failover the store follows the new master by itself;
* `redis+cluster://host:port[,host:port]` and `rediss+cluster://` (TLS): a Redis Cluster
  (`redis.asyncio.cluster.RedisCluster`). Keys that must live together share a `{hash tag}` (see
  `pyai_caching.engine.keys.entry_key`), `scan` and `clear` visit every primary, and `clear` deletes slot by slot.

Each running event loop gets its own client and connections, created on first use in that loop and closed when
the loop shuts down (`asyncio.run` and `asyncio.Runner` finalize it) or when `close()` is called in it. Timeouts
are short and redis-py retries nothing but a broken connection, once and at once (a restarted server leaves every
pooled connection broken; the retry reconnects): on a dead or stalled server a call fails after about
`socket_timeout` seconds (a call queued for a free connection waits at most `pool_timeout` more), and a refused
connection fails at once.

Inside: `url` parses and checks the URL, `clients` builds redis-py's clients (timeouts, pools, Sentinel, Cluster),
`scripts` holds the Lua scripts, `store` the `RedisStore` itself.
"""

from pyai_caching.stores.redis.store import RedisStore

__all__ = ["RedisStore"]
