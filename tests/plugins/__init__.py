"""Throw-away extensions used by tests/test_seams.py to prove each seam takes one entry + one module."""
