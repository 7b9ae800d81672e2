"""Engine-side servers: the emulated worker serves SGLang's and vLLM's HTTP API
(:mod:`kvroute.worker.http_api`) with the simulator's worker running in real time
(:mod:`kvroute.worker.emulated`) and their metrics (:mod:`kvroute.worker.exported_metrics`).
Needs the ``serve`` extra: ``pip install 'kvroute[serve]'``."""

from kvroute.worker.emulated import EmulatedConfig, EmulatedWorker
from kvroute.worker.http_api import create_app

__all__ = ["EmulatedConfig", "EmulatedWorker", "create_app"]
