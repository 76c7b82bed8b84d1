"""dockwatch_core: the one error hierarchy (``errors``), shared by the gateway and the store.

Standard library only. The contract's value types and the GS1 helpers live in the pure domain
(``gateway.domain.model``, ``gateway.domain.gs1``): the domain imports the standard library only.

Copyright (C) 2026 the dockwatch developers. Licensed under GPL-3.0-or-later.
"""
