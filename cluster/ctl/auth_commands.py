"""auth enable/disable, user and role management, as etcdctl 3.4 runs them."""

from __future__ import annotations

import getpass
import sys

from cluster.api import errors as etcd_errors
from cluster.api.gen.authpb import auth_pb2
from cluster.api.gen.etcdserverpb import rpc_pb2
from cluster.ctl.auth_output import print_auth, print_names, print_role_get, print_user_get
from cluster.ctl.cobra import Command
from cluster.ctl.exits import EXIT_BAD_ARGS, CtlExit
from cluster.ctl.flags import FlagSet, FlagSpec
from cluster.ctl.kv_commands import prefix_end
from cluster.ctl.session import Runner, Session

USER_ADD_FLAGS = (
    FlagSpec("interactive", "bool", True, "Read password from stdin instead of interactive terminal"),
    FlagSpec("new-user-password", "string", "", "Supply password from the command line flag"),
    FlagSpec("no-password", "bool", False, "Create a user without password (CN based auth only)"),
)
USER_GET_FLAGS = (FlagSpec("detail", "bool", False, "Show permissions of roles granted to the user"),)
PASSWD_FLAGS = (
    FlagSpec(
        "interactive", "bool", True, "If true, read password from stdin instead of interactive terminal"
    ),
)
GRANT_PERM_FLAGS = (
    FlagSpec("prefix", "bool", False, "grant a prefix permission"),
    FlagSpec(
        "from-key",
        "bool",
        False,
        "grant a permission of keys that are greater than or equal to the given key using byte compare",
    ),
)
REVOKE_PERM_FLAGS = (
    FlagSpec("prefix", "bool", False, "revoke a prefix permission"),
    FlagSpec(
        "from-key",
        "bool",
        False,
        "revoke a permission of keys that are greater than or equal to the given key using byte compare",
    ),
)


def _b(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


async def _auth(s: Session, method: str, request: object, timeout: float | None = None) -> object:
    async with s.client() as client:
        return await client.auth(method, request, timeout=timeout)


def _ask_password(s: Session, name: str) -> str:
    """Prompt twice on the terminal, as etcdctl's speakeasy prompts do."""
    s.stdout.flush()
    try:
        first = getpass.getpass(f"Password of {name}: ", stream=sys.stdout)
        if not first:
            raise CtlExit(EXIT_BAD_ARGS, "empty password")
        second = getpass.getpass(f"Type password of {name} again for confirmation: ", stream=sys.stdout)
    except (EOFError, OSError) as err:
        raise CtlExit(EXIT_BAD_ARGS, f"failed to ask password: {err}") from None
    if first != second:
        raise CtlExit(EXIT_BAD_ARGS, "given passwords are different")
    return first


def _scan_word(s: Session) -> str:
    """Go's ``fmt.Scanf("%s")``: the first whitespace-separated word of stdin."""
    words = s.stdin.read().split()
    return words[0].decode("utf-8", "surrogateescape") if words else ""


async def run_auth_enable(s: Session) -> None:
    if s.inv.args:
        raise CtlExit(EXIT_BAD_ARGS, "auth enable command does not accept any arguments")
    timeout = s.seconds("command-timeout")
    async with s.client() as client:
        while True:
            try:
                await client.auth("AuthEnable", rpc_pb2.AuthEnableRequest(), timeout=timeout)
                break
            except etcd_errors.ROOT_ROLE_NOT_EXIST:
                await client.auth("RoleAdd", rpc_pb2.AuthRoleAddRequest(name="root"), timeout=timeout)
                request = rpc_pb2.AuthUserGrantRoleRequest(user="root", role="root")
                await client.auth("UserGrantRole", request, timeout=timeout)
    s.out("Authentication Enabled\n")


async def run_auth_disable(s: Session) -> None:
    if s.inv.args:
        raise CtlExit(EXIT_BAD_ARGS, "auth disable command does not accept any arguments")
    await _auth(s, "AuthDisable", rpc_pb2.AuthDisableRequest(), s.seconds("command-timeout"))
    s.out("Authentication Disabled\n")


async def run_user_add(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "user add command requires user name as its argument")
    flags, arg = s.inv.flags, s.inv.args[0]
    user, password, no_password = arg, "", bool(flags.get("no-password"))
    if not no_password:
        if flags.get("new-user-password"):
            password = str(flags.get("new-user-password"))
        elif ":" in arg:
            user, _, password = arg.partition(":")
            if not user:
                raise CtlExit(EXIT_BAD_ARGS, "empty user name is not allowed")
        elif not flags.get("interactive"):
            password = _scan_word(s)
        else:
            password = _ask_password(s, arg)
    request = rpc_pb2.AuthUserAddRequest(
        name=user, password=password, options=auth_pb2.UserAddOptions(no_password=no_password)
    )
    resp = await _auth(s, "UserAdd", request)
    assert s.printer is not None
    print_auth(s.printer, resp, f"User {user} created\n")


async def run_user_delete(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "user delete command requires user name as its argument")
    name = s.inv.args[0]
    resp = await _auth(s, "UserDelete", rpc_pb2.AuthUserDeleteRequest(name=name))
    assert s.printer is not None
    print_auth(s.printer, resp, f"User {name} deleted\n")


async def run_user_get(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "user get command requires user name as its argument")
    name = s.inv.args[0]
    async with s.client() as client:
        resp = await client.auth("UserGet", rpc_pb2.AuthUserGetRequest(name=name))
        assert s.printer is not None
        if not s.inv.flags.get("detail"):
            print_user_get(s.printer, name, resp)
            return
        s.out(f"User: {name}\n")
        for role in resp.roles:
            s.out("\n")
            role_resp = await client.auth("RoleGet", rpc_pb2.AuthRoleGetRequest(role=role))
            print_role_get(s.printer, role, role_resp)


async def run_user_list(s: Session) -> None:
    if s.inv.args:
        raise CtlExit(EXIT_BAD_ARGS, "user list command requires no arguments")
    resp = await _auth(s, "UserList", rpc_pb2.AuthUserListRequest())
    assert s.printer is not None
    print_names(s.printer, resp, list(resp.users), None)  # type: ignore[attr-defined]


async def run_user_passwd(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "user passwd command requires user name as its argument")
    name = s.inv.args[0]
    password = _scan_word(s) if not s.inv.flags.get("interactive") else _ask_password(s, name)
    request = rpc_pb2.AuthUserChangePasswordRequest(name=name, password=password)
    resp = await _auth(s, "UserChangePassword", request)
    assert s.printer is not None
    print_auth(s.printer, resp, "Password updated\n")


async def run_user_grant_role(s: Session) -> None:
    if len(s.inv.args) != 2:
        raise CtlExit(EXIT_BAD_ARGS, "user grant command requires user name and role name as its argument")
    user, role = s.inv.args
    resp = await _auth(s, "UserGrantRole", rpc_pb2.AuthUserGrantRoleRequest(user=user, role=role))
    assert s.printer is not None
    print_auth(s.printer, resp, f"Role {role} is granted to user {user}\n")


async def run_user_revoke_role(s: Session) -> None:
    if len(s.inv.args) != 2:
        raise CtlExit(EXIT_BAD_ARGS, "user revoke-role requires user name and role name as its argument")
    user, role = s.inv.args
    resp = await _auth(s, "UserRevokeRole", rpc_pb2.AuthUserRevokeRoleRequest(name=user, role=role))
    assert s.printer is not None
    print_auth(s.printer, resp, f"Role {role} is revoked from user {user}\n")


async def run_role_add(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "role add command requires role name as its argument")
    name = s.inv.args[0]
    resp = await _auth(s, "RoleAdd", rpc_pb2.AuthRoleAddRequest(name=name))
    assert s.printer is not None
    print_auth(s.printer, resp, f"Role {name} created\n")


async def run_role_delete(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "role delete command requires role name as its argument")
    name = s.inv.args[0]
    resp = await _auth(s, "RoleDelete", rpc_pb2.AuthRoleDeleteRequest(role=name))
    assert s.printer is not None
    print_auth(s.printer, resp, f"Role {name} deleted\n")


async def run_role_get(s: Session) -> None:
    if len(s.inv.args) != 1:
        raise CtlExit(EXIT_BAD_ARGS, "role get command requires role name as its argument")
    name = s.inv.args[0]
    resp = await _auth(s, "RoleGet", rpc_pb2.AuthRoleGetRequest(role=name))
    assert s.printer is not None
    print_role_get(s.printer, name, resp)


async def run_role_list(s: Session) -> None:
    if s.inv.args:
        raise CtlExit(EXIT_BAD_ARGS, "role list command requires no arguments")
    resp = await _auth(s, "RoleList", rpc_pb2.AuthRoleListRequest())
    assert s.printer is not None
    print_names(s.printer, resp, list(resp.roles), "Roles")  # type: ignore[attr-defined]


def perm_range(args: list[str], flags: FlagSet) -> tuple[str, str]:
    """etcdctl's key and range end for a permission from ``key [endkey]`` and --prefix/--from-key."""
    prefix, from_key = bool(flags.get("prefix")), bool(flags.get("from-key"))
    key = args[0]
    if not key:
        if prefix and from_key:
            raise CtlExit(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
        return "\x00", "\x00" if prefix or from_key else ""
    if len(args) == 1:
        if prefix:
            if from_key:
                raise CtlExit(EXIT_BAD_ARGS, "--from-key and --prefix flags are mutually exclusive")
            return key, prefix_end(_b(key)).decode("utf-8", "surrogateescape")
        return key, "\x00" if from_key else ""
    if prefix:
        raise CtlExit(EXIT_BAD_ARGS, "unexpected endkey argument with --prefix flag")
    if from_key:
        raise CtlExit(EXIT_BAD_ARGS, "unexpected endkey argument with --from-key flag")
    return key, args[1]


async def run_role_grant_permission(s: Session) -> None:
    args = s.inv.args
    if len(args) < 3:
        raise CtlExit(
            EXIT_BAD_ARGS,
            "role grant command requires role name, permission type, and key [endkey] as its argument",
        )
    type_name = args[1].upper()
    if type_name not in auth_pb2.Permission.Type.keys():  # noqa: SIM118
        raise CtlExit(EXIT_BAD_ARGS, f"invalid permission type: {args[1]}")
    key, end = perm_range(args[2:], s.inv.flags)
    perm = auth_pb2.Permission(key=_b(key), range_end=_b(end))
    perm.permType = auth_pb2.Permission.Type.Value(type_name)  # type: ignore[assignment]
    resp = await _auth(
        s, "RoleGrantPermission", rpc_pb2.AuthRoleGrantPermissionRequest(name=args[0], perm=perm)
    )
    assert s.printer is not None
    print_auth(s.printer, resp, f"Role {args[0]} updated\n")


async def run_role_revoke_permission(s: Session) -> None:
    args = s.inv.args
    if len(args) < 2:
        raise CtlExit(
            EXIT_BAD_ARGS,
            "role revoke-permission command requires role name and key [endkey] as its argument",
        )
    key, end = perm_range(args[1:], s.inv.flags)
    request = rpc_pb2.AuthRoleRevokePermissionRequest(role=args[0], key=_b(key), range_end=_b(end))
    resp = await _auth(s, "RoleRevokePermission", request)
    if not end:
        text = f"Permission of key {args[1]} is revoked from role {args[0]}\n"
    elif end != "\x00":
        text = f"Permission of range [{args[1]}, {end}) is revoked from role {args[0]}\n"
    else:
        text = f"Permission of range [{args[1]}, <open ended> is revoked from role {args[0]}\n"
    assert s.printer is not None
    print_auth(s.printer, resp, text)


def auth_commands(runner: Runner) -> dict[str, list[Command]]:
    """The auth, user and role subcommands, by group name."""
    return {
        "auth": [
            Command("disable", "disable", "Disables authentication", run=runner(run_auth_disable)),
            Command("enable", "enable", "Enables authentication", run=runner(run_auth_enable)),
        ],
        "user": [
            Command(
                "add",
                "add <user name or user:password> [options]",
                "Adds a new user",
                flags=USER_ADD_FLAGS,
                run=runner(run_user_add),
            ),
            Command("delete", "delete <user name>", "Deletes a user", run=runner(run_user_delete)),
            Command(
                "get",
                "get <user name> [options]",
                "Gets detailed information of a user",
                flags=USER_GET_FLAGS,
                run=runner(run_user_get),
            ),
            Command(
                "grant-role",
                "grant-role <user name> <role name>",
                "Grants a role to a user",
                run=runner(run_user_grant_role),
            ),
            Command("list", "list", "Lists all users", run=runner(run_user_list)),
            Command(
                "passwd",
                "passwd <user name> [options]",
                "Changes password of user",
                flags=PASSWD_FLAGS,
                run=runner(run_user_passwd),
            ),
            Command(
                "revoke-role",
                "revoke-role <user name> <role name>",
                "Revokes a role from a user",
                run=runner(run_user_revoke_role),
            ),
        ],
        "role": [
            Command("add", "add <role name>", "Adds a new role", run=runner(run_role_add)),
            Command("delete", "delete <role name>", "Deletes a role", run=runner(run_role_delete)),
            Command(
                "get", "get <role name>", "Gets detailed information of a role", run=runner(run_role_get)
            ),
            Command(
                "grant-permission",
                "grant-permission [options] <role name> <permission type> <key> [endkey]",
                "Grants a key to a role",
                flags=GRANT_PERM_FLAGS,
                run=runner(run_role_grant_permission),
            ),
            Command("list", "list", "Lists all roles", run=runner(run_role_list)),
            Command(
                "revoke-permission",
                "revoke-permission <role name> <key> [endkey]",
                "Revokes a key from a role",
                flags=REVOKE_PERM_FLAGS,
                run=runner(run_role_revoke_permission),
            ),
        ],
    }
