"""The commands that run several signals together: snapshot (one bundle, for cron) and
agent (continuous windows), over one bundle store (bundles.py)."""
