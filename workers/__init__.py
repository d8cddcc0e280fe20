"""The worker process runtime: connect, heartbeat, compute micro-shard gradients, send them."""
