"""The live router: an aiohttp reverse proxy that routes with a kvroute policy.

Needs the ``serve`` extra (aiohttp, prometheus-client): ``pip install 'kvroute[serve]'``.
"""

from kvroute.server.app import APP_KEY, RouterApp, ServeConfig, build_app

__all__ = ["APP_KEY", "RouterApp", "ServeConfig", "build_app"]
