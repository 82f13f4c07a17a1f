"""The ground floor: helpers that know nothing of the network (files, checkpoints, data,
tokenizers, devices, optimizers, the training log). Nothing here imports a module above it.

    python -m pytest -q tests/test_layers.py   # the floor's imports, checked
"""
