"""The Archive document: where the archive lives (at most one per configuration)."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from imapsync_decl.config.documents.rules import SCHEMA_KEY, StrictModel


class ArchiveDocument(StrictModel):
    """Where the archive lives (at most one Archive document)."""

    model_config = ConfigDict(title="Archive", populate_by_name=True)

    schema_ref: str | None = SCHEMA_KEY
    kind: Literal["Archive"] = Field(description="Document kind.")
    path: str = Field(
        min_length=1,
        description="Archive directory, relative to this document. Without an Archive document "
        "the archive is archive/ beside the configuration directory.",
    )
    search_during_apply: bool = Field(
        default=True,
        description="apply indexes what it archives for `archive search`, in a process of its "
        "own beside the archiving. false: apply archives only, and `imapsync-decl archive "
        "rebuild-search` (for example at night) indexes what is new.",
    )
