"""The learning loop: the store's decision log and events, exported as a data directory that
`winback train` learns from (see `serving.learning.export`)."""

from serving.learning.export import ExportCounts, LogTables, export_log, read_log

__all__ = ["ExportCounts", "LogTables", "export_log", "read_log"]
