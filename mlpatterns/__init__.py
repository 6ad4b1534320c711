"""Shared core of the ML system design patterns: one copy of what every pattern needs."""

__version__ = "0.1.0"
