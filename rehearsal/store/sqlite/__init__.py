"""The embedded default record and text stores: one SQLite database (WAL) per memory folder."""
