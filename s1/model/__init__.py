"""Qwen2 model: config, modules, KV caches, checkpoint loading, tokenizer (import the submodules)."""
