"""JSON Schemas (draft 2020-12) of the documents, generated from the models.

``schemas/`` in the repository holds the output of :func:`schema_files`; a test
fails when the two drift apart. Editors and pre-commit hooks (check-jsonschema)
use them; they read one document per file, so multi-document YAML files are
checked by ``imapsync-decl validate`` only.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import Field, TypeAdapter
from pydantic.json_schema import GenerateJsonSchema

from imapsync_decl.config.documents import (
    ArchiveDocument,
    DocumentModel,
    Profile,
    Users,
    WebDocument,
)

DRAFT = "https://json-schema.org/draft/2020-12/schema"

_KINDS: dict[str, DocumentModel] = {
    "profile": Profile,
    "users": Users,
    "archive": ArchiveDocument,
    "web": WebDocument,
}


def _kind_name(model: DocumentModel) -> str:
    """The document kind a model reads (its title: ``Archive`` for ArchiveDocument)."""
    return str(model.model_config.get("title") or model.__name__)


_KIND_NAMES = {model.__name__: _kind_name(model) for model in _KINDS.values()}


class _KindNamedSchema(GenerateJsonSchema):
    """Names the definition of each document model after its kind, not its class."""

    def normalize_name(self, name: str) -> str:
        return super().normalize_name(_KIND_NAMES.get(name, name))


def _finish(schema: dict[str, Any], title: str, description: str) -> dict[str, Any]:
    return {"$schema": DRAFT, "title": title, "description": description, **schema}


def document_schema() -> dict[str, Any]:
    """One schema for any document, dispatching on ``kind``."""
    adapter: TypeAdapter[Any] = TypeAdapter(
        Annotated[Profile | Users | ArchiveDocument | WebDocument, Field(discriminator="kind")]
    )
    schema = adapter.json_schema(by_alias=True, schema_generator=_KindNamedSchema)
    return _finish(
        schema,
        "imapsync-decl document",
        "Any document of an imapsync-decl configuration directory: Profile, Users, Archive or Web.",
    )


def kind_schema(kind: str) -> dict[str, Any]:
    model = _KINDS[kind]
    schema = model.model_json_schema(by_alias=True, schema_generator=_KindNamedSchema)
    schema.pop("title", None)
    description = schema.pop("description", "")
    return _finish(schema, f"imapsync-decl {_kind_name(model)} document", description)


def schema_files() -> dict[str, str]:
    """File name -> content, as checked in under ``schemas/``."""
    files = {f"{kind}.schema.json": kind_schema(kind) for kind in _KINDS}
    files["document.schema.json"] = document_schema()
    return {
        name: json.dumps(body, indent=2, ensure_ascii=False) + "\n" for name, body in files.items()
    }
