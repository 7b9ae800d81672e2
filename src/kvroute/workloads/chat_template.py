"""A model's own chat template, from the ``tokenizer_config.json`` beside its tokenizer.

Contract:

* :func:`find_chat_template` looks in the folder of a ``tokenizer.json`` (or in a model
  folder) for ``tokenizer_config.json`` and returns its ``chat_template`` as a
  :class:`ChatTemplate`, or None when there is none. A list of named templates (the
  newer config format) gives the one named ``default``.
* ``ChatTemplate.render(messages)`` renders it the way Hugging Face ``transformers``
  does for a chat request, so the router's units are the ids the engine will see:
  a sandboxed jinja2 environment with ``trim_blocks`` and ``lstrip_blocks``, the
  variables ``messages``, ``add_generation_prompt=True``, ``bos_token``, ``eos_token``,
  and the helpers ``raise_exception`` and ``strftime_now``. A template error (for
  example a template that rejects the role order) raises :class:`ConfigError`.
* Rendering needs ``jinja2`` (in the ``tokenizers`` extra).
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from kvroute.errors import ConfigError

__all__ = ["ChatTemplate", "find_chat_template"]


def _token_text(tok: Any) -> str:
    """A special token as a config states it: a string or ``{"content": ...}``."""
    if isinstance(tok, dict):
        return str(tok.get("content", ""))
    return tok if isinstance(tok, str) else ""


class ChatTemplate:
    def __init__(self, source: str, bos_token: str = "", eos_token: str = "",
                 origin: str = "") -> None:
        try:
            import jinja2
            from jinja2.ext import loopcontrols
            from jinja2.sandbox import ImmutableSandboxedEnvironment
        except ImportError as e:
            raise ConfigError("the model's chat template needs jinja2: "
                              "pip install 'kvroute[tokenizers]'") from e
        self.origin = origin

        def raise_exception(message: str) -> None:
            raise jinja2.exceptions.TemplateError(message)

        def tojson(x: Any, ensure_ascii: bool = False, indent: int | None = None,
                   separators: Any = None, sort_keys: bool = False) -> str:
            return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent,
                              separators=separators, sort_keys=sort_keys)

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                            extensions=[loopcontrols])
        env.filters["tojson"] = tojson
        env.globals["raise_exception"] = raise_exception
        env.globals["strftime_now"] = time.strftime
        try:
            self._template = env.from_string(source)
        except jinja2.exceptions.TemplateError as e:
            raise ConfigError(f"{origin or 'chat template'}: not a valid jinja2 template "
                              f"({e})") from e
        self._error = jinja2.exceptions.TemplateError
        self._tokens = {"bos_token": bos_token, "eos_token": eos_token}

    def render(self, messages: list[dict[str, Any]]) -> str:
        try:
            return str(self._template.render(messages=messages, add_generation_prompt=True,
                                             **self._tokens))
        except self._error as e:
            raise ConfigError(f"the chat template rejected the messages: {e}") from e
        except (TypeError, KeyError, AttributeError) as e:
            raise ConfigError(f"the chat template could not render the messages "
                              f"({type(e).__name__}: {e})") from e


def find_chat_template(tokenizer_path: str | os.PathLike[str]) -> ChatTemplate | None:
    """The ``chat_template`` of the ``tokenizer_config.json`` next to ``tokenizer_path``."""
    path = os.fspath(tokenizer_path)
    folder = path if os.path.isdir(path) else os.path.dirname(os.path.abspath(path))
    config_path = os.path.join(folder, "tokenizer_config.json")
    if not os.path.isfile(config_path):
        return None
    try:
        with open(config_path, encoding="utf-8") as fh:
            config = json.load(fh)
    except (OSError, ValueError) as e:
        raise ConfigError(f"{config_path}: not readable as JSON ({e})") from e
    source = config.get("chat_template") if isinstance(config, dict) else None
    if isinstance(source, list):  # [{"name": ..., "template": ...}, ...]
        named = {t.get("name"): t.get("template") for t in source if isinstance(t, dict)}
        source = named.get("default")
    if not isinstance(source, str) or not source.strip():
        return None
    return ChatTemplate(source, _token_text(config.get("bos_token")),
                        _token_text(config.get("eos_token")), origin=config_path)
