"""kvroute: joint request routing and prefix-KV-cache eviction for multi-replica LLM serving."""

__version__ = "0.1.0"
__all__ = ["__version__"]
