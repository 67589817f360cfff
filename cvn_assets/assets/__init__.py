"""Thin Dagster layer: each asset calls the pure modules beside it and reports metadata."""
