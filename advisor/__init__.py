"""Advisor: learns per-service prefetch lists from traced runs and evaluates them."""

__version__ = "0.1.0"
