"""Files of a run: CSV tables, checkpoint files, and the run-directory guard."""
