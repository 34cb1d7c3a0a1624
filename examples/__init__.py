"""tilestream examples: a separate package using only the public ``import tilestream as ts`` API.

Its dependencies are the ``examples`` extra of the root ``pyproject.toml``.
"""
