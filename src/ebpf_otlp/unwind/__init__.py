"""Unwinding user stacks built without frame pointers: compact tables compiled from CFI."""
