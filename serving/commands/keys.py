"""``routebandit keys``: mint, list and revoke API keys (stored hashed)."""

from __future__ import annotations

import argparse
from typing import Any

from serving.commands.serve import add_settings_flags, settings_from


def register(subparsers: Any) -> None:
    p: argparse.ArgumentParser = subparsers.add_parser(
        "keys", help="manage API keys", description="Manage the service's API keys."
    )
    sub = p.add_subparsers(dest="keys_command", metavar="ACTION")
    sub.required = True
    create = sub.add_parser("create", help="mint a key for a tenant (printed once)")
    create.add_argument("--tenant", required=True, help="tenant the key acts for")
    create.add_argument("--admin", action="store_true",
                        help="may change the catalog and the policy")
    create.add_argument("--label", help="a note to recognise the key by")
    add_settings_flags(create)
    create.set_defaults(func=_create)
    lst = sub.add_parser("list", help="list keys (prefixes only)")
    add_settings_flags(lst)
    lst.set_defaults(func=_list)
    revoke = sub.add_parser("revoke", help="revoke a key by its prefix")
    revoke.add_argument("prefix", help="the key's first 10 characters, as `keys list` shows")
    add_settings_flags(revoke)
    revoke.set_defaults(func=_revoke)


def _store(args: argparse.Namespace) -> Any:
    from feedback.store import Store

    settings = settings_from(args)
    if settings.database_url is None:
        settings.resolved_data_dir.mkdir(parents=True, exist_ok=True)
    return Store(settings.resolved_database_url)


def _create(args: argparse.Namespace) -> int:
    from serving.auth import create_key

    store = _store(args)
    try:
        key, record = create_key(store, tenant=args.tenant, admin=args.admin, label=args.label)
    finally:
        store.close()
    role = "admin key" if record.admin else "key"
    print(key)
    print(f"# {role} {record.prefix} for tenant {record.tenant!r}: shown once, store it now. "
          "A running server leaves development mode at its next restart.")
    return 0


def _list(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        keys = store.api_keys()
    finally:
        store.close()
    for k in keys:
        state = "revoked" if k.revoked_at else "active"
        print(f"{k.prefix}  {k.tenant:<20} {'admin' if k.admin else 'user ':<5} {state:<7} "
              f"{k.created_at:%Y-%m-%d %H:%M}  {k.label or ''}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    store = _store(args)
    try:
        done = store.revoke_api_key(args.prefix)
    finally:
        store.close()
    print("revoked" if done else f"no active key with prefix {args.prefix!r}")
    return 0 if done else 1
