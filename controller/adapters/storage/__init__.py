"""The controller's state file: one SQLite base (`db`) and a store per kind of record.

Layer: adapters (storage).
"""
