"""The live router: a reverse proxy that routes with a kvroute policy, on a lean HTTP/1.1
server (:mod:`kvroute.server.http_server`, :mod:`~kvroute.server.http_connection`,
:mod:`~kvroute.server.http_messages`) and client (:mod:`kvroute.server.upstream`,
:mod:`~kvroute.server.upstream_connection`).

Needs the ``serve`` extra (httptools, prometheus-client; aiohttp for the emulated worker and
the load generator): ``pip install 'kvroute[serve]'``.
"""

from kvroute.server.app import RouterApp, ServeConfig, build_app

__all__ = ["RouterApp", "ServeConfig", "build_app"]
