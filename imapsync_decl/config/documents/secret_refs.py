"""Secret references in documents: where a password is kept, never the password itself.

A password is ``{env: NAME}``, ``{file: PATH}``, ``{credential: NAME}`` or an inline
string (warned about by ``validate``). The references are read late, when a login
needs them; :func:`secret_references` lists what a service running a document must
provide.
"""

from __future__ import annotations

from typing import Annotated, Any, TypeAlias

from pydantic import BaseModel, Discriminator, Field, Tag

from imapsync_decl.config.documents.rules import ENV_NAME_PATTERN, WIRE_SAFE, StrictModel, checked


class EnvSecret(StrictModel):
    """A secret read from an environment variable when it is needed."""

    env: str = Field(
        pattern=ENV_NAME_PATTERN, description="Name of the environment variable holding the secret."
    )


class FileSecret(StrictModel):
    """A secret read from a file (its content, without a trailing newline)."""

    file: str = Field(
        min_length=1,
        description="Path of the file holding the secret; relative paths resolve against the "
        "document that names them. Keep it readable by the owner only (chmod 600).",
    )


CREDENTIAL_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,254}$"


class CredentialSecret(StrictModel):
    """A secret read from a systemd credential (``LoadCredential=NAME:PATH`` in the
    service): the file ``$CREDENTIALS_DIRECTORY/NAME``, without a trailing newline."""

    credential: str = Field(
        pattern=CREDENTIAL_NAME_PATTERN,
        description="Name of the systemd credential holding the secret (LoadCredential=NAME:PATH "
        "in the service; read from $CREDENTIALS_DIRECTORY/NAME).",
    )


def secret_tag(value: Any) -> str | None:
    if isinstance(value, str):
        return "secret:inline"
    if isinstance(value, EnvSecret):  # serialising a validated model
        return "secret:env"
    if isinstance(value, FileSecret):
        return "secret:file"
    if isinstance(value, CredentialSecret):
        return "secret:credential"
    if isinstance(value, dict):
        if "env" in value:
            return "secret:env"
        if "file" in value:
            return "secret:file"
        if "credential" in value:
            return "secret:credential"
    return None


SecretRef: TypeAlias = Annotated[
    Annotated[str, Field(min_length=1), *checked(WIRE_SAFE), Tag("secret:inline")]
    | Annotated[EnvSecret, Tag("secret:env")]
    | Annotated[FileSecret, Tag("secret:file")]
    | Annotated[CredentialSecret, Tag("secret:credential")],
    Discriminator(
        secret_tag,
        custom_error_type="secret_ref",
        custom_error_message="expected a password string, {env: NAME}, {file: PATH} or"
        " {credential: NAME}",
    ),
]

SECRET_DESCRIPTION = (
    "A password: {env: NAME} (environment variable), {file: PATH} (file content), "
    "{credential: NAME} (a systemd credential), or an inline string (warned about, since "
    "profiles are committed to git). Never logged or shown."
)

SecretReference: TypeAlias = EnvSecret | FileSecret | CredentialSecret


def secret_references(model: BaseModel) -> list[SecretReference]:
    """Every secret reference in ``model`` and the models inside it, in field order (what a
    service that runs it must provide)."""
    found: list[SecretReference] = []
    stack: list[Any] = [model]
    while stack:
        value = stack.pop()
        if isinstance(value, EnvSecret | FileSecret | CredentialSecret):
            found.append(value)
        elif isinstance(value, BaseModel):
            stack.extend(reversed([getattr(value, name) for name in type(value).model_fields]))
        elif isinstance(value, list | tuple):
            stack.extend(reversed(value))
        elif isinstance(value, dict):
            stack.extend(reversed(list(value.values())))
    return found
