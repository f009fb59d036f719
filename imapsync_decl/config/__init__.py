"""The configuration: the documents of ``profiles.d/`` and what they resolve to.

``documents`` are the pydantic models of each document kind (Profile, Archive,
Users, Directory); ``loader`` reads YAML/JSON files keeping each value's
``path:line:col``; ``schema`` exports the published JSON Schemas; ``resolve`` turns
the documents, CSV files and user list into the mailboxes to archive; ``templates``
and ``cron`` are the identity templates and schedules.
"""
