"""dockwatch: an RFID (LLRP) and weight-shelf (Modbus) edge gateway.

Copyright (C) 2026 the dockwatch developers. Licensed under GPL-3.0-or-later.
"""

__version__ = "0.1.0"
