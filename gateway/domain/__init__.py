"""Pure domain logic: standard library only, no I/O, no clocks (time is an argument)."""
