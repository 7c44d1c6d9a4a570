"""Qwen2 model: config, modules, checkpoint loading, tokenizer (import the submodules)."""
