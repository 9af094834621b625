"""The style-transfer job: options, graph and entry point.

Installed as ``beam_style_transfer.pipeline``: ``python -m beam_style_transfer.pipeline``, or the
``beam-style-transfer`` script; from the checkout's root, ``python -m pipeline`` finds this folder.

Imports: nothing (its modules import what they wire).
"""
