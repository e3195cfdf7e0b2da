"""Data sets and their loaders: NASA C-MAPSS FD001 (bundled, :mod:`.cmapss`), z-scored series and seeded masks
(:mod:`.series`), per-entity history from a CSV or Parquet table (:mod:`.history`)."""
