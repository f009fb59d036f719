"""Directory defaults and attribute helpers: pure, no server."""

from __future__ import annotations

from imapsync_decl.config.documents import Directory


def test_active_directory_defaults_and_helpers() -> None:
    from imapsync_decl.sources.directory import _aliases, is_disabled

    ad = Directory.model_validate(
        {"type": "active_directory", "url": "ldaps://dc.example.test", "base_dn": "dc=example"}
    )
    assert ad.attribute("username") == "sAMAccountName"
    assert ad.attribute("display_name") == "displayName"
    assert ad.attribute("aliases") == "proxyAddresses"
    assert "userAccountControl:1.2.840.113556.1.4.803:=2" in ad.effective_filter
    assert is_disabled(["514"]) is True  # NORMAL_ACCOUNT | ACCOUNTDISABLE
    assert is_disabled(["512"]) is False
    assert _aliases(
        ["SMTP:Ann@example.test", "smtp:ann.b@example.test", "X500:/o=x", "sip:ann@example.test"],
        "ann@example.test",
    ) == ("ann.b@example.test",)
    openldap = Directory.model_validate({"url": "ldap://h", "base_dn": "dc=x"})
    assert (openldap.attribute("username"), openldap.effective_filter) == (
        "uid",
        "(objectClass=inetOrgPerson)",
    )
