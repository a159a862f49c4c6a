"""redwarden's wire protocol and shared foundations, imported by the agent, the controller and the console.

Layer: protocol (the bottom of the house; it imports no other redwarden package). What both sides of the
wire must agree on lives here once: the report schema (`report`), its signature (`signing`), the typed
directives and their acknowledgements (`directives`), the Sentinel settings and their defaults
(`sentinel`), and the two program-wide helpers every program uses the same way (`settings`, `logs`).
"""

__version__ = "0.2.0"
