"""The request protocol kvroute's three HTTP parties share: the router
(:mod:`kvroute.server.app`), the emulated worker (:mod:`kvroute.worker.http_api`) and the
load generator (:mod:`kvroute.bench.client`). Each reads a request, a response, an error
body and an engine's metric names the same way, from one place:

* :mod:`kvroute.protocol.request_body`: routes, prompts (text, token ids, batches, chat
  messages) and their units, ``max_tokens``, ``stream``, the session header, and what a
  bad request is (400);
* :mod:`kvroute.protocol.response_body`: the JSON error body, token usage and
  ``cached_tokens`` (JSON bodies and SSE chunks), SSE ``data:`` lines;
* :mod:`kvroute.protocol.metric_names`: SGLang's and vLLM's Prometheus metric names.

Each module's docstring states its part of the contract.
"""
