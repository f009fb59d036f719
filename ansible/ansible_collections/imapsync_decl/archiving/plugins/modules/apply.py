#!/usr/bin/python
# Copyright: imapsync-decl contributors
# MIT License (see https://opensource.org/licenses/MIT)

DOCUMENTATION = r"""
---
module: apply
short_description: Archive IMAP mailboxes with imapsync-decl's profiles
version_added: "0.1.0"
description:
  - Runs C(imapsync-decl) on the managed host to archive what the profiles of a
    configuration directory select and the archive does not hold yet.
  - In check mode, runs C(imapsync-decl plan --format json --detailed-exitcode) (or reads
    O(plan_file)) and changes nothing, neither on the mail servers nor in the archive;
    the task is changed exactly when the plan has work (a folder to archive or rescan, or
    messages to delete).
  - Otherwise plans (C(plan --out) to a private temporary file) and applies exactly that
    plan with C(imapsync-decl apply --format json PLAN); or applies O(plan_file) if given.
    The task is changed exactly when the run archived, re-pointed or deleted messages, so
    a second run reports no change.
  - In diff mode, shows per profile, mailbox and folder the counts that change (messages
    archived, messages on the server).
  - The module runs the C(imapsync-decl) executable and never imports its Python package,
    which may live in another Python (a virtualenv, pipx) than the one Ansible uses.
author:
  - imapsync-decl contributors (!UNKNOWN)
requirements:
  - imapsync-decl on the managed host
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
  diff_mode:
    support: full
  platform:
    platforms: posix
options:
  config_dir:
    description:
      - The configuration directory (the C(profiles.d/) with the Profile, Users and Archive
        documents).
    type: path
    required: true
  profiles:
    description:
      - The names of the profiles to plan and apply. All profiles when not given.
      - Not together with O(plan_file), which says itself what it applies.
    type: list
    elements: str
  executable:
    description:
      - The C(imapsync-decl) command, a name looked up on E(PATH) or a path.
    type: str
    default: imapsync-decl
  plan_file:
    description:
      - A plan saved with C(imapsync-decl plan --out), applied exactly (only the UIDs it
        lists). A plan that the configuration, the servers or the archive no longer agree
        with fails the task (the saved plan is stale).
      - In check mode the file is read and reported, not checked against the servers.
      - Read without following a symbolic link.
    type: path
  allow_partial:
    description:
      - When some mailboxes or folders fail (exit code 3) and the others are done, the task
        fails unless this is true; then it succeeds with a warning per failure.
    type: bool
    default: false
  env:
    description:
      - Environment variables for C(imapsync-decl), such as the passwords that the
        profiles read from an C(env) reference.
      - Passed in the command's environment only, never on its command line; the values
        never appear in the task's output.
    type: dict
    default: {}
notes:
  - A run that another C(apply) holds the archive's lock against fails, naming the holder.
  - Without O(plan_file), the servers are read twice, once for the plan and once when
    apply checks the plan against them.
seealso:
  - module: imapsync_decl.archiving.info
"""

EXAMPLES = r"""
- name: Show what would be archived (check mode runs plan)
  imapsync_decl.archiving.apply:
    config_dir: /etc/imapsync-decl/profiles.d
  check_mode: true
  diff: true

- name: Archive the staff profile
  imapsync_decl.archiving.apply:
    config_dir: /etc/imapsync-decl/profiles.d
    profiles: [staff]
    env:
      MASTER_PASSWORD: "{{ vault_master_password }}"
  register: archived

- name: Apply a reviewed plan, even if some mailboxes fail
  imapsync_decl.archiving.apply:
    config_dir: /etc/imapsync-decl/profiles.d
    plan_file: /var/lib/imapsync-decl/plan.json
    allow_partial: true
"""

RETURN = r"""
changed:
  description:
    - In check mode, whether the plan has work (archive, rescan or delete); otherwise
      whether the run archived, re-pointed or deleted messages.
  returned: always
  type: bool
exit_code:
  description:
    - The exit code of C(imapsync-decl apply) (in check mode, of C(plan)); 2 in check
      mode means changes pending, 3 some mailboxes failed (the task fails unless
      O(allow_partial)).
  returned: when the command ran
  type: int
  sample: 0
plan:
  description:
    - The plan, as C(imapsync-decl plan --format json) prints it, per profile, mailbox
      and folder, with its actions and UIDs; in normal mode the plan that was applied.
  returned: when a plan was made or read
  type: dict
  sample:
    format_version: 1
    totals: {mailboxes: 1, folders_to_archive: 1, messages: 3}
run:
  description:
    - The run's protocol, as C(imapsync-decl apply --format json) prints it (and the
      C(runs) command shows it later); null in check mode.
  returned: always
  type: dict
  sample:
    status: ok
    exit_code: 0
    totals: {mailboxes: 1, failed_mailboxes: 0, archived: 3, already_present: 0}
errors:
  description: The failures of profiles, mailboxes and folders, each with its place.
  returned: always
  type: list
  elements: str
  sample: ["staff/alice@example.com: login refused"]
"""

import os
import shutil
import tempfile

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.imapsync_decl.archiving.plugins.module_utils.changes import (
    plan_diff,
    plan_errors,
    plan_has_work,
    plan_warnings,
    run_changed,
    run_diff,
    run_errors,
)
from ansible_collections.imapsync_decl.archiving.plugins.module_utils.cli import (
    CHANGES_PENDING,
    FAILURES,
    OK,
    PARTIAL,
    STALE_PLAN,
    Cli,
    CommandError,
    read_plan_file,
)

ARGUMENT_SPEC = {
    "config_dir": {"type": "path", "required": True},
    "profiles": {"type": "list", "elements": "str"},
    "executable": {"type": "str", "default": "imapsync-decl"},
    "plan_file": {"type": "path"},
    "allow_partial": {"type": "bool", "default": False},
    "env": {"type": "dict", "default": {}, "no_log": True},
}

# apply prints its protocol with these exit codes (11: a folder changed since the plan;
# 130/143: interrupted after the run began); 11 and 12 may also come without one.
APPLY_CODES = (OK, PARTIAL, STALE_PLAN, 12, 130, 143)


def profile_args(profiles):
    return [f"--profile={name}" for name in profiles or []]


def finish(module, result, rc, errors):
    """Exit with the result, or fail it for a partial run without allow_partial."""
    result["errors"] = errors
    if rc == PARTIAL:
        if not module.params["allow_partial"]:
            module.fail_json(msg=FAILURES[PARTIAL] + ": " + "; ".join(errors), **result)
        for error in errors:
            module.warn(error)
    module.exit_json(**result)


def check(module, cli):
    """Check mode: the plan (or the saved plan), nothing applied."""
    plan_file = module.params["plan_file"]
    if plan_file:
        rc, plan = None, read_plan_file(plan_file)
    else:
        args = ["--detailed-exitcode", *profile_args(module.params["profiles"])]
        rc, plan = cli.run_json(["plan"], args, ok=(OK, CHANGES_PENDING, PARTIAL))
    for warning in plan_warnings(plan):
        module.warn(warning)
    result = {"changed": plan_has_work(plan), "plan": plan, "run": None}
    if rc is not None:
        result["exit_code"] = rc
    if module._diff:
        result["diff"] = plan_diff(plan)
    finish(module, result, PARTIAL if rc == PARTIAL else OK, plan_errors(plan))


def apply(module, cli, plan_path):
    """Apply the saved plan at ``plan_path``; ``plan`` is what it says."""
    plan = read_plan_file(plan_path)
    for warning in plan_warnings(plan):
        module.warn(warning)
    try:
        rc, run = cli.run_json(["apply"], [plan_path], ok=APPLY_CODES)
    except CommandError as error:
        # Refused before the run (a stale saved plan, a locked archive): nothing applied.
        module.fail_json(
            msg=error.msg, changed=False, plan=plan, run=None, exit_code=error.rc, errors=[]
        )
    result = {"changed": run_changed(run), "plan": plan, "run": run, "exit_code": rc}
    if module._diff:
        result["diff"] = run_diff(plan, run)
    errors = run_errors(run)
    if rc not in (OK, PARTIAL):
        detail = "; ".join(errors) if errors else None
        module.fail_json(
            msg=FAILURES.get(rc, f"apply exited {rc}") + (f": {detail}" if detail else ""),
            errors=errors,
            **result,
        )
    finish(module, result, rc, errors)


def run_module():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    result = {"changed": False, "run": None, "errors": []}
    if params["plan_file"] and params["profiles"]:
        module.fail_json(
            msg="profiles does not go with plan_file: the plan says what is applied", **result
        )
    try:
        config_dir = os.path.abspath(params["config_dir"])
        cli = Cli(module, params["executable"], config_dir, params["env"])
        if module.check_mode:
            check(module, cli)
        elif params["plan_file"]:
            apply(module, cli, os.path.abspath(params["plan_file"]))
        else:
            # In the task's own temporary directory (mode 0700), removed with it.
            work = tempfile.mkdtemp(prefix="imapsync-decl-plan-", dir=module.tmpdir)
            try:
                plan_path = os.path.join(work, "plan.json")
                args = [f"--out={plan_path}", *profile_args(params["profiles"])]
                cli.run_json(["plan"], args, ok=(OK, PARTIAL))
                apply(module, cli, plan_path)
            finally:
                shutil.rmtree(work, ignore_errors=True)
    except CommandError as error:
        if error.rc is not None:
            result["exit_code"] = error.rc
        module.fail_json(msg=error.msg, **result)


def main():
    run_module()


if __name__ == "__main__":
    main()
