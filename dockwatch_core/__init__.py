"""dockwatch_core: the contract's vocabulary shared by the gateway, the store and the simulators.

The value types (``model``: ``Movement``, ``StockLevel``, ``Alert``, ``DeviceStatus``,
``CatalogItem``...), the GS1 check digit and GTIN rule (``gs1``) and the one error hierarchy
(``errors``). Standard library only, like the domain that builds on it.

Copyright (C) 2026 the dockwatch developers. Licensed under GPL-3.0-or-later.
"""
