"""Drive `git-worktree-ports mcp` with the official MCP Python SDK (`mcp` on PyPI).

Run by tests/cli/mcp.rs with one argument, a JSON object:
  {"scenario": "tools" | "storm", "bin": ..., "repo": ..., "outside": ..., "range": "A-B",
   "worktrees": [...]}
The environment is the test's hermetic one. Any failed check raises: exit code 1 and a
traceback. On success the last line of stdout is a JSON summary for the Rust side.
"""

import asyncio
import contextlib
import json
import os
import subprocess
import sys

import jsonschema
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.shared.exceptions import MCPError

CONF = json.loads(sys.argv[1])
BIN = CONF["bin"]


def cli(*args, cwd=None):
    """The CLI, as a person would run it: its JSON answer."""
    out = subprocess.run([BIN, *args], cwd=cwd or CONF["repo"], capture_output=True, text=True)
    assert out.returncode in (0, 1), out
    return json.loads(out.stdout)


def server(cwd):
    return stdio_client(
        StdioServerParameters(command=BIN, args=["mcp"], cwd=cwd, env=dict(os.environ)),
        errlog=sys.stderr,
    )


class Tools:
    """A session plus the tools it listed, checking every answer against its schema."""

    def __init__(self, session, listed):
        self.session = session
        self.tools = {t.name: t for t in listed.tools}

    async def call(self, name, **arguments):
        result = await self.session.call_tool(name, arguments)
        assert not result.is_error, f"{name} {arguments}: {result.content}"
        schema = self.tools[name].output_schema
        jsonschema.validate(result.structured_content, schema, cls=jsonschema.Draft202012Validator)
        # The text form is the same answer.
        assert json.loads(result.content[0].text) == result.structured_content
        return result.structured_content

    async def fails(self, name, code, **arguments):
        result = await self.session.call_tool(name, arguments)
        assert result.is_error, f"{name} {arguments} should fail: {result.structured_content}"
        err = result.structured_content
        assert err["success"] is False and err["error"] == code, err
        # The text is the CLI's error line: the message, then what to try instead.
        assert result.content[0].text.startswith(f"{code}: {err['message']}"), result.content
        return err


async def connect(stack, cwd):
    """A server started in `cwd`, initialized, its tools listed. `stack` closes it (anyio's
    task groups close in the reverse order they opened: one AsyncExitStack for all)."""
    read, write = await stack.enter_async_context(server(cwd))
    session = await stack.enter_async_context(ClientSession(read, write))
    init = await session.initialize()
    listed = await session.list_tools()
    return session, init, Tools(session, listed)


async def tools_scenario():
    repo = CONF["repo"]
    # Started elsewhere than the repository: every tool is told where it acts.
    async with contextlib.AsyncExitStack() as stack:
        session, init, t = await connect(stack, CONF["outside"])
        assert init.server_info.name == "git-worktree-ports", init
        assert "get_port" in (init.instructions or "")
        names = sorted(t.tools)
        assert names == sorted([
            "add_worktree", "allocate", "get_port", "env", "list", "list_machine", "status",
            "check_ports", "suggest", "lease", "release", "release_lease", "remove_worktree",
        ]), names
        for name, tool in t.tools.items():
            assert tool.input_schema["type"] == "object", name
            assert tool.output_schema["type"] == "object", name
            ann = tool.annotations
            destructive = name in ("release", "release_lease", "remove_worktree")
            reads = name in ("get_port", "list", "list_machine", "status", "check_ports", "suggest")
            assert ann.destructive_hint is destructive, (name, ann)
            assert ann.read_only_hint is reads, (name, ann)
            # The output schema is the one `--print-schema` prints.
        for name, schema_name in [("allocate", "allocate"), ("get_port", "get"), ("env", "env"),
                                  ("list_machine", "list-all"), ("lease", "lease")]:
            printed = json.loads(subprocess.run([BIN, "--print-schema", schema_name],
                                                capture_output=True, text=True).stdout)
            assert t.tools[name].output_schema == printed, name

        # Not allocated yet: a tool error with the CLI's code, and the server goes on.
        await t.fails("get_port", "NOT_ALLOCATED", path=repo, service="web")
        allocated = await t.call("allocate", path=repo)
        web = allocated["ports"]["web"]
        assert allocated["worktree"] == "main"
        got = await t.call("get_port", path=repo, service="web")
        assert got["port"] == web and got["worktree"] == "main", got
        # The CLI agrees.
        assert cli("get", "web", "--json")["port"] == web
        # A path inside the worktree works as its root does; a relative one is the server's.
        sub = os.path.join(repo, ".worktree-ports")
        assert (await t.call("get_port", path=sub, service="db"))["port"] == allocated["ports"]["db"]
        rel = os.path.relpath(repo, CONF["outside"])
        assert (await t.call("get_port", path=rel, service="web"))["port"] == web
        env = await t.call("env", path=repo)
        assert env["WEB_PORT"] == web, env
        listed = await t.call("list", path=repo)
        assert [w["name"] for w in listed["worktrees"]] == ["main"], listed
        status = await t.call("status", path=repo)
        assert status["worktrees"][0]["services"], status
        sugg = await t.call("suggest", path=repo, service="web", count=2)
        assert web not in [s["ports"]["web"] for s in sugg["suggestions"]], sugg

        added = await t.call("add_worktree", repository=repo, path="../feat-mcp",
                             branch="agent/feat", ports={"web": "auto"})
        feat = added["path"]
        assert os.path.isdir(feat) and added["worktree"] == "feat-mcp", added
        assert added["branch"] == "agent/feat", added
        assert added["ports"]["web"] != web
        assert any(f["path"] == ".env" for f in added["rendered"]), added
        machine = await t.call("list_machine")
        rows = [w for r in machine["repositories"] for w in r["worktrees"]]
        assert {w["name"] for w in rows} >= {"main", "feat-mcp"}, machine
        checked = await t.call("check_ports", ports=[web])
        assert checked["ports"][0]["status"] == "allocated" and checked["all_free"] is False

        # A lease made here is seen by the CLI, and one made by the CLI is released here.
        lease = await t.call("lease", count=2, range=CONF["range"], ttl="10m")
        seen = cli("check", *map(str, lease["ports"]), "--json")
        assert [p["status"] for p in seen["ports"]] == ["leased", "leased"], seen
        theirs = cli("lease", f"--range={CONF['range']}", "--json")
        assert set(theirs["ports"]).isdisjoint(lease["ports"])
        gone = await t.call("release_lease", id=theirs["id"])
        assert gone["released"] == theirs["ports"], gone
        assert cli("check", str(theirs["ports"][0]), "--json")["all_free"] is True
        mine = cli("release", f"--lease={lease['id']}", "--json")
        assert sorted(mine["released"]) == sorted(lease["ports"]), mine

        released = await t.call("release", path=feat, services=["web"])
        assert released["released"] == {"web": added["ports"]["web"]}, released
        removed = await t.call("remove_worktree", path=repo, worktree="feat-mcp")
        assert not os.path.exists(feat), removed

        # Failures: the CLI's codes and messages.
        await t.fails("get_port", "UNKNOWN_SERVICE", path=repo, service="nope")
        await t.fails("get_port", "NOT_A_REPOSITORY", path="/nonexistent/dir", service="web")
        await t.fails("get_port", "NOT_A_REPOSITORY", path=CONF["outside"], service="web")
        await t.fails("allocate", "INVALID_PORT", path=repo, worktree="main", ports={"web": 80})
        await t.fails("lease", "USAGE_ERROR", ttl="5x")
        cli_err = subprocess.run([BIN, "get", "nope", "--json"], cwd=repo, capture_output=True,
                                 text=True)
        via_mcp = await t.fails("get_port", "UNKNOWN_SERVICE", path=repo, service="nope")
        assert json.loads(cli_err.stdout)["message"] == via_mcp["message"]

        # Input outside a tool's schema, and an unknown tool: JSON-RPC errors.
        for name, args in [("get_port", {"path": repo}), ("get_port", {"path": 1, "service": "web"}),
                           ("allocate", {"path": repo, "ports": {"web": "soon"}}),
                           ("no_such_tool", {})]:
            try:
                await session.call_tool(name, args)
            except MCPError as e:
                assert e.error.code == -32602, e.error
            else:
                raise AssertionError(f"{name} {args} was accepted")
        # Still serving.
        assert (await t.call("get_port", path=repo, service="web"))["port"] == web
        summary = {"web": web, "tools": len(t.tools)}
    print(json.dumps(summary))


async def storm_scenario():
    """Two MCP servers and the CLI allocate the same worktrees at once, in different orders,
    and lease at the same time: every worktree gets one set of ports whoever asked first, and
    no port is held twice."""
    wts = CONF["worktrees"]
    answers = {}

    async def via(tools, order, who):
        for wt in order:
            got = await tools.call("allocate", path=wt, render=False)
            answers.setdefault(wt, []).append((who, got["ports"]))
        leased = await tools.call("lease", count=2, range=CONF["range"])
        answers.setdefault("leases", []).append((who, leased["ports"]))

    async def via_cli(order):
        for wt in order:
            proc = await asyncio.create_subprocess_exec(
                BIN, "allocate", "--no-render", "--json", cwd=wt,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
            out, err = await proc.communicate()
            assert proc.returncode == 0, err
            answers.setdefault(wt, []).append(("cli", json.loads(out)["ports"]))
        proc = await asyncio.create_subprocess_exec(
            BIN, "lease", "--count=2", f"--range={CONF['range']}", "--json",
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, _ = await proc.communicate()
        answers.setdefault("leases", []).append(("cli", json.loads(out)["ports"]))

    async with contextlib.AsyncExitStack() as stack:
        _, _, a = await connect(stack, CONF["outside"])
        _, _, b = await connect(stack, CONF["outside"])
        await asyncio.gather(
            via(a, wts, "a"),
            via(b, list(reversed(wts)), "b"),
            via_cli(wts[len(wts) // 2:] + wts[:len(wts) // 2]),
        )
    held = {}
    for wt in wts:
        sets = answers[wt]
        assert len(sets) == 3, (wt, sets)
        first = sets[0][1]
        assert all(ports == first for _, ports in sets), (wt, sets)
        for service, port in first.items():
            assert port not in held, f"{port} held twice: {held[port]} and {wt} {service}"
            held[port] = (wt, service)
    for who, ports in answers["leases"]:
        for port in ports:
            assert port not in held, f"leased {port} ({who}) is also {held[port]}"
            held[port] = ("lease", who)
    print(json.dumps({"ports": len(held), "worktrees": len(wts)}))


asyncio.run({"tools": tools_scenario, "storm": storm_scenario}[CONF["scenario"]]())
