"""The controller's pure core: decisions as functions of a snapshot, a policy and `now`.

Layer: core. No sockets, no clock, no randomness, no logging; it imports only `protocol` and itself.
"""
