"""Web access for archive users: the ASGI application that ``imapsync-decl serve`` runs.

Each archive user signs in (a password set with ``users passwd``, or their directory
password when the Web document allows it) and reads only their own archive: the tree
of mailboxes and folders, folder listings, search, messages, downloads and restore;
administrators reach every archive, the runs and the archive's statistics. The pages
are rendered on the server from jinja2 templates, with one stylesheet and no script;
a small JSON API under ``/api/`` offers the same to automation. Like ``cli`` this is a
top layer: it calls ``run`` and ``store`` and nothing imports it but ``cli``.
"""
