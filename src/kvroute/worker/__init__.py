"""Engine-side servers: the emulated worker serves SGLang's and vLLM's HTTP API
(:mod:`kvroute.worker.http_api`) with the simulator's worker running in real time
(:mod:`kvroute.worker.emulated`) and their metrics (:mod:`kvroute.worker.exported_metrics`),
one engine or several data-parallel ranks behind one port
(:mod:`kvroute.worker.data_parallel`; ``EmulatedConfig(dp_size=N)``). Needs the ``serve``
extra: ``pip install 'kvroute[serve]'``."""

from kvroute.worker.data_parallel import DataParallelWorker
from kvroute.worker.emulated import EmulatedConfig, EmulatedWorker
from kvroute.worker.http_api import RANKS_KEY, WORKER_KEY, create_app

__all__ = ["RANKS_KEY", "WORKER_KEY", "DataParallelWorker", "EmulatedConfig", "EmulatedWorker",
           "create_app"]
