"""Where mailboxes and users come from: CSV files, LDAP/AD directories, the archive's user list.

``csv`` parses per-mailbox credential files (errors with their line); ``directory``
reads users from LDAP/AD read-only and bounded; ``users`` merges them with the user
list kept in the archive's index (sync, would-add, list).
"""
