"""The controller's application: the watch loop, the healer, the executor, the provisioner and the
service that wires them to the adapters.

Layer: app (the top of the controller; nothing in the controller imports it).
"""
