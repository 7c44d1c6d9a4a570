"""Small helpers every layer shares, pure Python: JSONL files, the shared-data folder, the
provenance record that goes next to every measured number."""
