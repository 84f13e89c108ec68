"""Planning (DESIGN §11): forecast offered calls, size the staff, build schedules.

Pure models live beside the store edges that feed them: `forecast` (counts in, forecasts out)
and `history` (the SQL that reads a run's offered calls per local interval).
"""
