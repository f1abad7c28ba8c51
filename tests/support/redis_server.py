"""The tests' redis-server: the package's (roomscribe/common/redis_server.py), under the name the tests import."""

from roomscribe.common.redis_server import RedisServer, free_port

__all__ = ["RedisServer", "free_port"]
