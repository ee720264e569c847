"""rqmaint: the maintenance toolkit for RQ (Redis Queue)."""

__version__ = "0.1.0"
