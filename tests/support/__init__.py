"""What tests share: fakes for kernel-free tests (fakes.py)."""
