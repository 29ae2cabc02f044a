"""Benchmarks: the engine against the machine's limit and hand-written alternatives (`jaxgrad bench`).

Not part of the library's import graph: this package uses jaxgrad, jaxgrad never imports it.
"""
