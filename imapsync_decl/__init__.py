"""imapsync-decl: declarative batch archiving of IMAP mailboxes."""

__version__ = "0.1.0"
