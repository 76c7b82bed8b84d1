"""LLRP reader simulator: ``server`` (:class:`~simulators.llrp.server.LlrpReaderSimulator`,
``dockwatch simulate llrp``) and ``source`` (what the simulated antennas hear). The LLRP binary
codec both directions use is :mod:`gateway.llrp.codec`."""
