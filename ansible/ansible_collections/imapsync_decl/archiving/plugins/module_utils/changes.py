# Copyright: imapsync-decl contributors
# MIT License (see https://opensource.org/licenses/MIT)
"""What a plan would change and what a run changed, read from the command's JSON.

``changed`` follows the command's own definitions: a plan has work when a folder is to
be archived or rescanned with UIDs, or has UIDs to delete (what ``plan
--detailed-exitcode`` reports as exit 2); a run changed something when it archived,
re-pointed (``already_present``) or deleted messages. The diff shows, per profile,
mailbox and folder, the counts that change: messages archived and messages on the server.
"""

WORK_ACTIONS = ("archive", "rescan")


def _folders(plan):
    for profile in plan.get("profiles") or []:
        for mailbox in profile.get("mailboxes") or []:
            for folder in mailbox.get("folders") or []:
                yield mailbox, folder


def folder_has_work(folder):
    pending = folder.get("action") in WORK_ACTIONS and folder.get("uids")
    return bool(pending or folder.get("delete"))


def plan_has_work(plan):
    """True exactly when the plan archives, rescans or deletes something."""
    return any(folder_has_work(folder) for _mailbox, folder in _folders(plan))


def plan_errors(plan):
    """The plan's errors, each naming its profile and mailbox (and folder)."""
    errors = []
    for profile in plan.get("profiles") or []:
        if profile.get("error"):
            errors.append(f"{profile.get('name')}: {profile['error']}")
        for mailbox in profile.get("mailboxes") or []:
            where = f"{mailbox.get('profile')}/{mailbox.get('archive_folder')}"
            if mailbox.get("error"):
                errors.append(f"{where}: {mailbox['error']}")
            for folder in mailbox.get("folders") or []:
                if folder.get("action") == "error":
                    errors.append(f"{where}/{folder.get('path')}: {folder.get('note')}")
    return errors


def plan_warnings(plan):
    return [
        f"{profile.get('name')}: {warning}"
        for profile in plan.get("profiles") or []
        for warning in profile.get("warnings") or []
    ]


def run_counts(run):
    totals = run.get("totals") or {}
    return {
        "archived": int(totals.get("archived") or 0),
        "re_pointed_or_present": int(totals.get("already_present") or 0),
        "deleted": int(totals.get("deleted") or 0),
    }


def run_changed(run):
    """True exactly when the run archived, re-pointed or deleted messages."""
    return any(run_counts(run).values())


def run_errors(run):
    """The run's errors: of whole profiles, of mailboxes and of folders."""
    errors = [str(e) for e in run.get("errors") or []]
    for mailbox in run.get("mailboxes") or []:
        where = f"{mailbox.get('profile')}/{mailbox.get('archive_folder')}"
        if mailbox.get("error"):
            errors.append(f"{where}: {mailbox['error']}")
        for folder in mailbox.get("folders") or []:
            if folder.get("error"):
                errors.append(f"{where}/{folder.get('path')}: {folder['error']}")
    return errors


def _line(mailbox, folder, archived, on_server):
    name = f"{mailbox.get('profile')}/{mailbox.get('archive_folder')}/{folder.get('path')}"
    return f"{name}: {archived} archived, {on_server} on the server\n"


def _before(folder):
    return int(folder.get("already_archived") or 0), int(folder.get("exists") or 0)


def plan_diff(plan):
    """Ansible's diff of a plan: per folder with work, the counts before and after."""
    before, after = [], []
    for mailbox, folder in _folders(plan):
        if not folder_has_work(folder):
            continue
        archived, on_server = _before(folder)
        before.append(_line(mailbox, folder, archived, on_server))
        to_archive = len(folder.get("uids") or []) if folder.get("action") in WORK_ACTIONS else 0
        to_delete = len(folder.get("delete") or [])
        after.append(_line(mailbox, folder, archived + to_archive, on_server - to_delete))
    return {
        "before": "".join(before),
        "after": "".join(after),
        "before_header": "archive and server",
        "after_header": "planned",
    }


def run_diff(plan, run):
    """Ansible's diff of a run: per folder the run changed, the counts before (the plan)
    and after (what the run did)."""
    done = {}
    for mailbox in run.get("mailboxes") or []:
        for folder in mailbox.get("folders") or []:
            key = (mailbox.get("profile"), mailbox.get("login"), folder.get("path"))
            done[key] = folder
    before, after = [], []
    for mailbox, folder in _folders(plan):
        result = done.get((mailbox.get("profile"), mailbox.get("login"), folder.get("path")))
        if not result:
            continue
        stored = int(result.get("archived") or 0) + int(result.get("already_present") or 0)
        deleted = int(result.get("deleted") or 0)
        if not (stored or deleted):
            continue
        archived, on_server = _before(folder)
        before.append(_line(mailbox, folder, archived, on_server))
        after.append(_line(mailbox, folder, archived + stored, on_server - deleted))
    return {
        "before": "".join(before),
        "after": "".join(after),
        "before_header": "archive and server",
        "after_header": "applied",
    }
