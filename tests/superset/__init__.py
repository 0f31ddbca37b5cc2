"""Tests against the real apache-superset package (their own virtual environment)."""
