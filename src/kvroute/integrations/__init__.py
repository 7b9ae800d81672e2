"""kvroute on other engines' machinery. Each module needs its own extra:

* :mod:`kvroute.integrations.ray_serve`: a Ray Serve request router running any kvroute
  routing policy (``pip install 'kvroute[ray]'``);
* :mod:`kvroute.integrations.ray_replica`: an emulated engine (a SimWorker) as a Ray
  Serve deployment, which reports its load through Serve's routing-stats hook;
* :mod:`kvroute.integrations.ray_grid`: ``kvroute compare --ray``, grid cells as Ray tasks.
"""
