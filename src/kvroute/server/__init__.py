"""The live router: a reverse proxy that routes with a kvroute policy, on a lean HTTP/1.1
server (:mod:`kvroute.server.http`) and client (:mod:`kvroute.server.upstream`).

Needs the ``serve`` extra (httptools, prometheus-client; aiohttp for the emulated worker and
the load generator): ``pip install 'kvroute[serve]'``.
"""

from kvroute.server.app import RouterApp, ServeConfig, build_app

__all__ = ["RouterApp", "ServeConfig", "build_app"]
