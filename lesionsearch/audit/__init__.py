"""The audit log: who ran which query, who exported what, who changed a study or an index, and
failed sign-ins. Services call :func:`lesionsearch.audit.services.record` where the action happens;
staff read the log in the admin (read-only) or with ``manage.py audit_export``."""
