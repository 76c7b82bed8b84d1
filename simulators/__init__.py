"""Device simulators (LLRP reader, Modbus weighing shelf, central inventory) and their scenarios."""
