"""Engine-side servers. :mod:`kvroute.worker.emulated` serves SGLang's and vLLM's HTTP API
with the simulator's worker running in real time (needs the ``serve`` extra:
``pip install 'kvroute[serve]'``)."""

from kvroute.worker.emulated import EmulatedConfig, EmulatedWorker, create_app

__all__ = ["EmulatedConfig", "EmulatedWorker", "create_app"]
