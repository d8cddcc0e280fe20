"""Data-parallel training: micro-shards, the wire protocol, the coordinator and its executors."""
