"""The style-transfer job: options, graph and entry point.

``python -m pipeline`` or the ``beam-style-transfer`` script runs it (``pipeline.main``).

Imports: nothing (its modules import what they wire).
"""
