"""Data sets bundled with twinstream (NASA C-MAPSS FD001) and their loaders."""
