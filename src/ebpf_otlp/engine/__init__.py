"""The capture engine: one loop over any set of collectors (capture), launch mode's held
command (launch), and what every command does around them (run)."""
