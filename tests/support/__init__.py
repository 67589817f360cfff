"""Test and benchmark support (not shipped in the package)."""
