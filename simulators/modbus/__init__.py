"""Modbus TCP weighing-transmitter simulator (see ``server``, ``registers``, ``physics``)."""
