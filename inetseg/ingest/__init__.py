"""Ingest steps as pure modules (no Ray): listing, shard plan, shard worker, duplicates, stats."""
