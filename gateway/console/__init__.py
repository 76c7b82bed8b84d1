"""The operator console: pages, live events and actions on the gateway's HTTP listener."""
