"""One folder per signal (profile, syscalls, net; heap to come): its collector, processor
and settings, its records and its renderers."""
