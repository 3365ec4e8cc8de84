"""Redis users for tests, one per role (`homeiq.shared.acl`): HOMEIQ_REDIS_ACL=1 runs the fault suite with them."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from homeiq.local.services import RedisServer
from homeiq.shared import acl
from homeiq.shared.stream import DEFAULT_NAMES, StreamNames


def acl_on() -> bool:
    """Whether HOMEIQ_REDIS_ACL=1 asks for a Redis with a user per role."""
    return os.environ.get("HOMEIQ_REDIS_ACL", "") == "1"


class AclUsers:
    """A random password per role, and the ACL file holding their users (`aclfile` of a RedisServer)."""

    def __init__(self, directory: Path, names: StreamNames = DEFAULT_NAMES) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.passwords: dict[acl.Role, str] = {role: secrets.token_hex(16) for role in (*acl.ROLES, *acl.SERVER_ROLES)}
        self.aclfile = directory / "users.acl"
        self.aclfile.write_text(acl.acl_file(names, self.passwords))

    @property
    def server_logins(self) -> dict[str, tuple[str, str]]:
        """The users Redis's own processes log in as (SentinelSet's `logins`): admin (readiness), replica, sentinel."""
        return {role: (role, self.passwords[role]) for role in ("admin", *acl.SERVER_ROLES)}

    @property
    def login(self) -> tuple[str, str]:
        """The admin user, for RedisServer's readiness check."""
        return "admin", self.passwords["admin"]

    def url(self, server: RedisServer, role: acl.Role) -> str:
        """`server`'s URL for `role`'s user."""
        return f"redis://{role}:{self.passwords[role]}@127.0.0.1:{server.port}/0"
