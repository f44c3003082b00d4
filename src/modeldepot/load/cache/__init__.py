"""The RAM/VRAM model cache."""

from modeldepot.load.cache._cache import CacheKey, CacheRecord, ModelCache, cache_key
from modeldepot.load.cache._stats import CacheBudget, CacheStats
from modeldepot.load.cache._tensors import model_size

__all__ = ["CacheBudget", "CacheKey", "CacheRecord", "CacheStats", "ModelCache", "cache_key", "model_size"]
