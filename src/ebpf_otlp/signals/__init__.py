"""One folder per signal (profile, syscalls, net, heap): its collector, processor and
settings, its records and its renderers; registry.py names each once."""
