"""Serving a model over HTTP: `qatune serve`, or `create_app` to mount in your own ASGI app."""

from qatune.serving.app import ServerLimits, create_app

__all__ = ["ServerLimits", "create_app"]
