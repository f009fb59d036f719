"""Reconcile cases as data: tests/cases/reconcile/<name>.json = facts + index -> expected plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from imapsync_decl.imap.facts import FolderInfo, FolderState
from imapsync_decl.plan.model import FolderPlan
from imapsync_decl.plan.reconcile import ArchivedFolder, FolderFacts, reconcile_folder

CASES = sorted((Path(__file__).parent / "cases" / "reconcile").glob("*.json"))
FOLDER = FolderInfo("Projects/2024", "Projects/2024", "/", frozenset())


def facts_from(body: dict[str, Any]) -> FolderFacts:
    state = FolderState(*body["state"]) if body["state"] is not None else None
    uids = tuple(body["uids"]) if body["uids"] is not None else None
    sizes = {int(k): v for k, v in body.get("sizes", {}).items()}
    return FolderFacts(
        FOLDER,
        state,
        uids,
        sizes,
        body.get("error"),
        condition=body.get("condition"),
        filtered=body.get("filtered", False),
        delete_candidates=frozenset(body.get("delete_candidates", ())),
        no_deletion=body.get("no_deletion"),
    )


def archived_from(body: dict[str, Any]) -> ArchivedFolder:
    raw = body["checkpoint"]
    checkpoint = (int(raw[0]), int(raw[1]), int(raw[2])) if raw is not None else None
    return ArchivedFolder(
        checkpoint,
        frozenset(body["archived_uids"]),
        body["archived_other"],
        condition=body.get("condition"),
        to_repair=frozenset(body.get("to_repair", ())),
    )


def observed(plan: FolderPlan, keys: list[str]) -> dict[str, Any]:
    values = {
        "action": plan.action,
        "uids": list(plan.uids),
        "bytes": plan.bytes,
        "already_archived": plan.already_archived,
        "previous_uidvalidity": plan.previous_uidvalidity,
        "note": plan.note,
        "delete": list(plan.delete),
        "no_deletion": plan.no_deletion,
        "condition": plan.condition,
        "filtered_out": plan.filtered_out,
    }
    return {k: values[k] for k in keys}


@pytest.mark.parametrize("case", CASES, ids=[c.stem for c in CASES])
def test_reconcile_case(case: Path) -> None:
    body = json.loads(case.read_text(encoding="utf-8"))
    plan = reconcile_folder(facts_from(body["facts"]), archived_from(body["archived"]))
    expected = body["expected"]
    got = observed(plan, list(expected))
    assert got == expected, (
        f"{case.name}: {body['description']}\n expected {expected}\n got      {got}"
    )


def test_cases_exist() -> None:
    assert len(CASES) >= 8
