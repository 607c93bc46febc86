"""Node agent: an NRI plugin that traces container starts and hands prefetch lists to nydus."""

__version__ = "0.1.0"
