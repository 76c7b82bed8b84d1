"""LLRP reader simulator: ``server`` (:class:`~simulators.llrp.server.LlrpReaderSimulator`,
``dockwatch simulate llrp``) and ``source`` (what the simulated antennas hear). ``session`` and
the modules it delegates to (``link``, ``settings``, ``rospecs``, ``inventory``, ``reports``,
``filters``, ``capabilities``, ``refusals``) are the reader one connection sees; they are not an
API. The LLRP binary codec both directions use is :mod:`gateway.llrp.codec`."""
