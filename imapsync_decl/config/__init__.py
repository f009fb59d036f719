"""The configuration: the documents of ``profiles.d/`` and what they resolve to.

``documents`` are the pydantic models of each document kind (Profile, Archive,
Users with its Directory), one module per part; ``loader`` reads YAML/JSON files
keeping each value's ``path:line:col``; ``schema`` exports the published JSON
Schemas; ``checks`` finds what the models cannot (across documents, files,
secrets, insecure settings); ``resolve`` turns the documents, CSV files and user
list into the mailboxes to archive, the values of ``model`` (Config, Mailbox,
Credentials, ListedUser); ``templates`` and ``cron`` are the identity templates
and schedules.
"""
