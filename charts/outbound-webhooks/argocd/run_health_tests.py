#!/usr/bin/env python3
"""Runs every Argo CD health check below this directory the way Argo CD does:
for each `<group>/<Kind>/health_test.yaml`, each test's `inputPath` object is
handed to `health.lua` as the global `obj` under a Lua 5.1 interpreter (Argo CD
runs gopher-lua, a Lua 5.1), and the returned status and message must equal
`healthStatus`. The script runs in an environment holding only `obj` and the
base, string, table and math libraries, so it cannot lean on anything Argo CD
does not offer.

    python3 run_health_tests.py [--lua lua5.1]

Needs `lua5.1` and Python 3 (standard library; PyYAML is used when present,
otherwise the small YAML reader below, which covers the test files).
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))


# --- YAML -----------------------------------------------------------------
# A reader for the block-style YAML of Kubernetes objects and Argo CD test
# files: mappings, sequences, plain/quoted scalars, comments. Used when
# PyYAML is not installed; when it is, the two are compared on every file.

def _scalar(text: str):
    if text.startswith('"'):
        return json.loads(text)
    if text.startswith("'"):
        if not text.endswith("'") or len(text) < 2:
            raise ValueError(f"unterminated quoted scalar: {text}")
        return text[1:-1].replace("''", "'")
    if text in ("", "~", "null", "Null", "NULL"):
        return None
    if text in ("true", "True", "TRUE"):
        return True
    if text in ("false", "False", "FALSE"):
        return False
    if text == "{}":
        return {}
    if text == "[]":
        return []
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def _strip_comment(line: str) -> str:
    quote = None
    for i, c in enumerate(line):
        if quote:
            if c == quote:
                quote = None
        elif c in "\"'" and (i == 0 or line[i - 1] in " :-[{,"):
            quote = c
        elif c == "#" and (i == 0 or line[i - 1] == " "):
            return line[:i].rstrip()
    return line.rstrip()


def _split_key(content: str):
    """`key: value` -> (key, value) or None when content is not a mapping entry."""
    if content.startswith(('"', "'")):
        end = content.index(content[0], 1)
        key, rest = _scalar(content[: end + 1]), content[end + 1:]
        if rest == ":" or rest.startswith(": "):
            return str(key), rest[1:].strip()
        return None
    for i, c in enumerate(content):
        if c == ":" and (i + 1 == len(content) or content[i + 1] == " "):
            return content[:i].strip(), content[i + 1:].strip()
    return None


def simple_yaml(text: str):
    lines = []
    for raw in text.splitlines():
        if raw.strip() in ("---", "..."):
            continue
        line = _strip_comment(raw)
        if line.strip():
            if "\t" in line[: len(line) - len(line.lstrip())]:
                raise ValueError("tab indentation")
            lines.append([len(line) - len(line.lstrip()), line.strip()])
    pos = 0

    def block(indent: int):
        nonlocal pos
        if lines[pos][1].startswith("- ") or lines[pos][1] == "-":
            return sequence(indent)
        return mapping(indent)

    def value_after(rest: str, indent: int, allow_same_indent_seq: bool):
        nonlocal pos
        if rest:
            return _scalar(rest)
        if pos < len(lines):
            nxt_indent, nxt = lines[pos]
            if nxt_indent > indent or (allow_same_indent_seq and nxt_indent == indent and nxt.startswith("-")):
                return block(nxt_indent)
        return None

    def mapping(indent: int):
        nonlocal pos
        out = {}
        while pos < len(lines) and lines[pos][0] == indent and not lines[pos][1].startswith("- "):
            kv = _split_key(lines[pos][1])
            if kv is None:
                raise ValueError(f"expected `key: value`: {lines[pos][1]!r}")
            pos += 1
            out[kv[0]] = value_after(kv[1], indent, True)
        return out

    def sequence(indent: int):
        nonlocal pos
        out = []
        while pos < len(lines) and lines[pos][0] == indent and (lines[pos][1].startswith("- ") or lines[pos][1] == "-"):
            rest = lines[pos][1][1:].strip()
            if not rest:
                pos += 1
                out.append(value_after("", indent, False))
            elif _split_key(rest) is not None:
                # `- key: value` starts a mapping indented at the item's content.
                lines[pos] = [indent + 2, rest]
                out.append(mapping(indent + 2))
            else:
                pos += 1
                out.append(_scalar(rest))
        return out

    if not lines:
        return None
    result = block(lines[0][0])
    if pos != len(lines):
        raise ValueError(f"unexpected indentation at {lines[pos][1]!r}")
    return result


def load_yaml(path: str):
    with open(path, encoding="utf-8") as f:
        text = f.read()
    ours = simple_yaml(text)
    try:
        import yaml  # PyYAML, optional
    except ImportError:
        return ours
    theirs = yaml.safe_load(text)
    if json.dumps(theirs, sort_keys=True, default=str) != json.dumps(ours, sort_keys=True, default=str):
        raise ValueError(f"{path}: the built-in YAML reader disagrees with PyYAML")
    return theirs


# --- Lua ------------------------------------------------------------------

def lua_string(s: str) -> str:
    out = []
    for b in s.encode("utf-8"):
        c = chr(b)
        if c == "\\" or c == '"':
            out.append("\\" + c)
        elif 32 <= b < 127:
            out.append(c)
        else:
            out.append("\\%d" % b)  # Lua 5.1 decimal escape, byte-exact
    return '"' + "".join(out) + '"'


def lua_value(v) -> str:
    if v is None:
        return "nil"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return lua_string(v)
    if isinstance(v, list):
        if any(x is None for x in v):
            raise ValueError("null inside a list cannot be a Lua sequence")
        return "{" + ", ".join(lua_value(x) for x in v) + "}"
    if isinstance(v, dict):
        return "{" + ", ".join(f"[{lua_string(str(k))}] = {lua_value(x)}" for k, x in v.items() if x is not None) + "}"
    return lua_string(str(v))  # e.g. timestamps PyYAML parsed: Argo CD sees strings


DRIVER = """
local obj = %s
local chunk = assert(loadfile(%s))
-- Only what Argo CD's Lua VM offers a health script (no io, os, require, ...).
local env = {
  obj = obj, assert = assert, error = error, ipairs = ipairs, next = next, pairs = pairs,
  pcall = pcall, select = select, tonumber = tonumber, tostring = tostring, type = type,
  unpack = unpack, string = string, table = table, math = math,
}
setfenv(chunk, env)
local hs = chunk()
if type(hs) ~= "table" then error("health.lua returned " .. type(hs) .. ", not a table") end
io.write(tostring(hs.status), "\\n", tostring(hs.message or ""))
"""


def run_case(lua: str, script: str, obj) -> "tuple[str, str]":
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False, encoding="utf-8") as f:
        f.write(DRIVER % (lua_value(obj), lua_string(script)))
        driver = f.name
    try:
        res = subprocess.run([lua, driver], capture_output=True, timeout=30)
    finally:
        os.unlink(driver)
    if res.returncode != 0:
        raise RuntimeError(res.stderr.decode("utf-8", "replace").strip())
    status, _, message = res.stdout.decode("utf-8").partition("\n")
    return status, message


SNIPPET_KEY = "resource.customizations.health.outboundwebhooks.io_OutboundWebhook: |"


def check_readme_snippet() -> "str | None":
    """The argocd-cm snippet in README.md must be health.lua, indented."""
    with open(os.path.join(HERE, "README.md"), encoding="utf-8") as f:
        lines = f.read().splitlines()
    starts = [i for i, l in enumerate(lines) if l.strip() == SNIPPET_KEY]
    if len(starts) != 1:
        return f"expected one `{SNIPPET_KEY}` line, found {len(starts)}"
    body = []
    for line in lines[starts[0] + 1:]:
        if line.startswith("```"):
            break
        if line.strip() and not line.startswith("    "):
            return f"snippet line not indented by 4: {line!r}"
        body.append(line[4:])
    with open(os.path.join(HERE, "outboundwebhooks.io", "OutboundWebhook", "health.lua"), encoding="utf-8") as f:
        lua = f.read()
    if "\n".join(body).rstrip("\n") != lua.rstrip("\n"):
        return "the argocd-cm snippet differs from health.lua (copy health.lua into it, indented by 4)"
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lua", default="lua5.1", help="Lua 5.1 interpreter (default: lua5.1)")
    args = parser.parse_args()
    if shutil.which(args.lua) is None:
        print(f"run_health_tests: missing tool: {args.lua} (Debian: apt-get install -y lua5.1)", file=sys.stderr)
        return 1
    version = subprocess.run([args.lua, "-v"], capture_output=True, text=True)
    if "Lua 5.1" not in version.stdout + version.stderr:
        print(f"run_health_tests: {args.lua} is not Lua 5.1: {version.stdout}{version.stderr}", file=sys.stderr)
        return 1

    checks = sorted(
        os.path.join(root) for root, _, files in os.walk(HERE) if "health.lua" in files
    )
    if not checks:
        print("run_health_tests: no health.lua found", file=sys.stderr)
        return 1
    passed = failed = 0
    for check in checks:
        name = os.path.relpath(check, HERE)
        tests = load_yaml(os.path.join(check, "health_test.yaml"))["tests"]
        listed = {t["inputPath"] for t in tests}
        on_disk = {os.path.join("testdata", f) for f in os.listdir(os.path.join(check, "testdata"))}
        if on_disk - listed:
            print(f"FAIL {name}: testdata without a test: {sorted(on_disk - listed)}")
            failed += 1
        for t in tests:
            want = (t["healthStatus"]["status"], t["healthStatus"].get("message") or "")
            label = f"{name}/{t['inputPath']}"
            try:
                got = run_case(args.lua, os.path.join(check, "health.lua"), load_yaml(os.path.join(check, t["inputPath"])))
            except Exception as e:  # noqa: BLE001 - report and go on
                print(f"FAIL {label}: {e}")
                failed += 1
                continue
            if got == want:
                print(f"ok   {label}: {got[0]}")
                passed += 1
            else:
                print(f"FAIL {label}: got {got}, want {want}")
                failed += 1
    readme_error = check_readme_snippet()
    if readme_error:
        print(f"FAIL README.md: {readme_error}")
        failed += 1
    else:
        print("ok   README.md: the argocd-cm snippet equals health.lua")
        passed += 1
    print(f"argocd health checks: {passed} passed, {failed} failed ({version.stdout.strip() or version.stderr.strip()})")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
