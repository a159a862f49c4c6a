"""The controller's adapters: everything that talks to the world (HTTP, SQLite, DigitalOcean, Redis,
Slack, PagerDuty), each behind a narrow interface.

Layer: adapters. They may import the core (its value types) and the configuration, never `app`.
"""
