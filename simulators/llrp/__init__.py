"""LLRP reader simulator: ``codec`` (LLRP binary, both directions), ``server``
(:class:`~simulators.llrp.server.LlrpReaderSimulator`, ``dockwatch simulate llrp``) and ``source``
(what the simulated antennas hear)."""
