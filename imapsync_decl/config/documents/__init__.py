"""The documents of a configuration directory, as pydantic models.

Four kinds of document live in ``profiles.d/``: ``Profile`` (what to archive and
how to log in), ``Users`` (the archive's user list), ``Archive`` (where the
archive is; the model is :class:`ArchiveDocument`, so that it is not taken for the
archive on disk) and ``Web`` (how ``serve`` offers the archive to its users). The models are strict: they accept exactly what the published
JSON Schemas in ``schemas/`` accept (``config.schema`` generates those from these
models, and a test checks that both agree on a catalogue of good and bad documents).

Cross-field rules are written twice, once as a model validator and once as a
JSON Schema fragment (``json_schema_extra``), so editors and ``validate`` reject
the same documents. Single strings are checked by the rules of ``rules``.

One module per part: ``rules`` (patterns and string checks), ``secret_refs``
(password references), ``server``, ``profile``, ``users`` (with the directory),
``archive`` and ``web``. This package gives their names in one place.
"""

from __future__ import annotations

from typing import TypeAlias

from imapsync_decl.config.documents.archive import ArchiveDocument
from imapsync_decl.config.documents.profile import (
    CsvSource,
    Delete,
    Filters,
    Folders,
    Identity,
    IdentityTemplate,
    MasterSource,
    Profile,
    SingleSource,
    Source,
    UserSelection,
)
from imapsync_decl.config.documents.rules import (
    EMAIL_PATTERN,
    ENV_NAME_PATTERN,
    HOST_RULES,
    LDAP_URL_RULES,
    NAME_PATTERN,
    TAG_MARK,
    WIRE_SAFE,
    WIRE_UNSAFE,
    Email,
    Rule,
    StrictModel,
    WireStr,
    checked,
)
from imapsync_decl.config.documents.secret_refs import (
    CREDENTIAL_NAME_PATTERN,
    SECRET_DESCRIPTION,
    CredentialSecret,
    EnvSecret,
    FileSecret,
    SecretRef,
    SecretReference,
    secret_references,
)
from imapsync_decl.config.documents.server import Server
from imapsync_decl.config.documents.users import (
    DIRECTORY_DEFAULTS,
    Directory,
    DirectoryAttributes,
    User,
    Users,
)
from imapsync_decl.config.documents.web import WebDocument, WebTls

__all__ = [
    "CREDENTIAL_NAME_PATTERN",
    "DIRECTORY_DEFAULTS",
    "DOCUMENT_KINDS",
    "EMAIL_PATTERN",
    "ENV_NAME_PATTERN",
    "HOST_RULES",
    "LDAP_URL_RULES",
    "NAME_PATTERN",
    "SECRET_DESCRIPTION",
    "TAG_MARK",
    "WIRE_SAFE",
    "WIRE_UNSAFE",
    "ArchiveDocument",
    "CredentialSecret",
    "CsvSource",
    "Delete",
    "Directory",
    "DirectoryAttributes",
    "Document",
    "DocumentModel",
    "Email",
    "EnvSecret",
    "FileSecret",
    "Filters",
    "Folders",
    "Identity",
    "IdentityTemplate",
    "MasterSource",
    "Profile",
    "Rule",
    "SecretRef",
    "SecretReference",
    "Server",
    "SingleSource",
    "Source",
    "StrictModel",
    "User",
    "UserSelection",
    "Users",
    "WebDocument",
    "WebTls",
    "WireStr",
    "checked",
    "secret_references",
]

Document: TypeAlias = Profile | Users | ArchiveDocument | WebDocument
DocumentModel: TypeAlias = type[Profile] | type[Users] | type[ArchiveDocument] | type[WebDocument]

DOCUMENT_KINDS: dict[str, DocumentModel] = {
    "Profile": Profile,
    "Users": Users,
    "Archive": ArchiveDocument,
    "Web": WebDocument,
}
