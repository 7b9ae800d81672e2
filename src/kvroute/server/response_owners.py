"""Which worker stored each Responses API response: the router's affinity for
``previous_response_id``.

An engine keeps the responses it stored in its own memory (vLLM with
``VLLM_ENABLE_RESPONSES_API_STORE=1``; SGLang likewise), so a request that continues one
(``previous_response_id``), and ``GET``/``DELETE /v1/responses/{id}`` and its
``/cancel`` and ``/input_items``, must go to the worker that answered it.

Contract: ``record(response_id, url)`` notes the worker (its URL, a data-parallel rank's
``URL@R``) that answered the response; ``owner(response_id)`` is that URL, or None for an
id this router did not see (made through another router, before a restart, or forgotten:
only the last ``capacity`` ids are kept, least recently recorded or read forgotten
first).
"""

from __future__ import annotations

from collections import OrderedDict

__all__ = ["ResponseOwners"]


class ResponseOwners:
    def __init__(self, capacity: int = 100_000) -> None:
        self.capacity = capacity
        self._owners: OrderedDict[str, str] = OrderedDict()

    def record(self, response_id: str, url: str) -> None:
        self._owners[response_id] = url
        self._owners.move_to_end(response_id)
        while len(self._owners) > self.capacity:
            self._owners.popitem(last=False)

    def owner(self, response_id: str) -> str | None:
        url = self._owners.get(response_id)
        if url is not None:
            self._owners.move_to_end(response_id)
        return url

    def __len__(self) -> int:
        return len(self._owners)
