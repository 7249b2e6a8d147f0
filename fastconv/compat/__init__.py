"""Adapters that give existing NumPy code fastconv's kernels behind that code's own API.

Each client has its own module, imported by name (nothing is imported or installed here):
``fastconv.compat.cs231n`` for the cache-style layer functions of the Stanford cs231n
assignments, ``fastconv.compat.numpy_ml`` for numpy-ml's conv2D and its Conv2D and Pool2D layers.
"""
