"""The style-transfer job: options, graph and entry point (``python -m pipeline``)."""
