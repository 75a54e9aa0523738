"""Worker processes: game (echo) workers, and auth workers."""
