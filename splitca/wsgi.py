"""The WSGI entry point for mod_wsgi (`splitca.wsgi:application`, the path deployments name)."""

from __future__ import annotations

from splitca.http.wsgiapp import application, make_app

__all__ = ["application", "make_app"]
