"""Talking to IMAP servers: bounded reading of responses, a read-only session, a write handle.

Every string that reaches the wire passes one check for CR, LF and NUL; every size
a server sends is bounded and every wait has a deadline. A session can only read;
deleting (``open_for_deletion``) and restoring (``open_for_restore``) go
through write handles obtained by an explicit call. This package knows
nothing of profiles: callers hand it the connection settings and the login.
"""
