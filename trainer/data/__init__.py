"""Training corpora available offline on every machine."""
