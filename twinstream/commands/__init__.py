"""CLI sub-commands that live outside twinstream.cli (mounted there)."""
