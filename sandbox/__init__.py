"""redwarden sandbox: a local cluster of real redis-server and redis-sentinel processes on loopback."""
