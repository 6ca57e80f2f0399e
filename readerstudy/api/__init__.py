"""The reader-study REST API (/api/v1/studies/): readers' reading and study administration."""
