#!/usr/bin/python
# Copyright: imapsync-decl contributors
# MIT License (see https://opensource.org/licenses/MIT)

DOCUMENTATION = r"""
---
module: info
short_description: Read an imapsync-decl configuration, its mailboxes and its last runs
version_added: "0.1.0"
description:
  - Runs the read-only commands of C(imapsync-decl) on the managed host and returns their
    JSON documents; contacts no mail server and changes nothing.
  - C(validate --format json) (the task fails when the configuration is invalid, with
    the validate document in its result), C(mailboxes --format json) and
    C(runs --format json), the newest runs first.
author:
  - imapsync-decl contributors (!UNKNOWN)
requirements:
  - imapsync-decl on the managed host
extends_documentation_fragment:
  - ansible.builtin.action_common_attributes
attributes:
  check_mode:
    support: full
    details: The module only reads; it runs the same in check mode.
  diff_mode:
    support: none
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
      - Return the mailboxes of these profiles only. All profiles when not given.
    type: list
    elements: str
  runs:
    description:
      - How many of the newest runs to return; V(0) for none.
    type: int
    default: 10
  executable:
    description:
      - The C(imapsync-decl) command, a name looked up on E(PATH) or a path.
    type: str
    default: imapsync-decl
  env:
    description:
      - Environment variables for C(imapsync-decl), such as the passwords that the
        profiles read from an C(env) reference (C(validate) warns about unset ones).
      - Passed in the command's environment only, never on its command line; the values
        never appear in the task's output.
    type: dict
    default: {}
seealso:
  - module: imapsync_decl.archiving.apply
"""

EXAMPLES = r"""
- name: Read the archiving configuration
  imapsync_decl.archiving.info:
    config_dir: /etc/imapsync-decl/profiles.d
    runs: 3
  register: archiving

- name: Fail when the last run was not ok
  ansible.builtin.assert:
    that: archiving.runs[0].status == "ok"
"""

RETURN = r"""
validate:
  description: The document of C(imapsync-decl validate --format json).
  returned: always
  type: dict
  sample:
    valid: true
    errors: []
    warnings: []
    profiles: [{name: staff, source: master, mailboxes: 12}]
mailboxes:
  description:
    - The mailboxes the profiles archive (C(imapsync-decl mailboxes --format json)), and
      the users of the list a profile does not archive (C(selected) false, with the
      reason). Passwords never appear.
  returned: when the configuration is valid
  type: list
  elements: dict
  sample: [{profile: staff, login: alice, archive_folder: alice@example.com, selected: true}]
runs:
  description:
    - The newest runs first (C(imapsync-decl runs --format json)), at most O(runs) of them,
      each with its id, command, start, end, status and totals.
  returned: when the configuration is valid
  type: list
  elements: dict
  sample: [{id: 3f2a9c1e, status: ok, totals: {archived: 12}}]
"""

import os

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.imapsync_decl.archiving.plugins.module_utils.cli import (
    CONFIG,
    OK,
    Cli,
    CommandError,
)

ARGUMENT_SPEC = {
    "config_dir": {"type": "path", "required": True},
    "profiles": {"type": "list", "elements": "str"},
    "runs": {"type": "int", "default": 10},
    "executable": {"type": "str", "default": "imapsync-decl"},
    "env": {"type": "dict", "default": {}, "no_log": True},
}


def problem_text(problem):
    """A problem of validate's document as validate prints it: path:line:col: field: message."""
    place = ":".join(
        str(problem[key]) for key in ("path", "line", "col") if problem.get(key) is not None
    )
    field = f"{problem['field']}: " if problem.get("field") else ""
    return f"{place}: {field}{problem.get('message')}"


def run_module():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    params = module.params
    result = {"changed": False}
    if params["runs"] < 0:
        module.fail_json(msg="runs must be 0 or more", **result)
    try:
        cli = Cli(
            module, params["executable"], os.path.abspath(params["config_dir"]), params["env"]
        )
        validate = cli.run_json(["validate"], ok=(OK, CONFIG))[1]
        result["validate"] = validate
        if not validate.get("valid"):
            errors = [problem_text(e) for e in validate.get("errors") or []]
            module.fail_json(
                msg="the configuration is invalid: " + "; ".join(errors[:20]), **result
            )
        mailboxes = cli.run_json(["mailboxes"])[1]
        wanted = params["profiles"]
        if wanted:
            known = {p.get("name") for p in validate.get("profiles") or []}
            unknown = [name for name in wanted if name not in known]
            if unknown:
                module.fail_json(msg="no such profile: " + ", ".join(unknown), **result)
            mailboxes = [m for m in mailboxes if m.get("profile") in wanted]
        result["mailboxes"] = mailboxes
        if params["runs"]:
            runs = cli.run_json(["runs"])[1]
            result["runs"] = runs[: params["runs"]]
        else:
            result["runs"] = []
    except CommandError as error:
        if error.rc is not None:
            result["exit_code"] = error.rc
        module.fail_json(msg=error.msg, **result)
    module.exit_json(**result)


def main():
    run_module()


if __name__ == "__main__":
    main()
