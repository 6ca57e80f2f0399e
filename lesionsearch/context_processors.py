from __future__ import annotations

from lesionsearch.roles import roles_of


def roles(request) -> dict:
    return {"user_roles": roles_of(request.user)}
