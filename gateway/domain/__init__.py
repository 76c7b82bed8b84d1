"""Pure domain logic: standard library only (and ``dockwatch_core``, the value types and errors
the edge store shares), no I/O, no clocks (time is an argument)."""
