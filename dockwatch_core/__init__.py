"""What the gateway and the edge store share: the value types of the domain (``model``: tag reads,
movements, stock levels, alerts, device statuses, their ids) and the one error hierarchy
(``errors``). Standard library only, like the pure domain that builds on it; the edge store
depends on this package and on nothing in ``gateway``.
"""
