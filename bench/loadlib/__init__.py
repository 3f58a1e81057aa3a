"""The modules of bench/load.py, the end-to-end load benchmark (load.py is the entry point)."""
