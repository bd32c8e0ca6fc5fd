"""Table and figure builders over run records (importable; the notebooks and README call these)."""
