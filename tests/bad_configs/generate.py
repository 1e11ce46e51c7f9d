#!/usr/bin/env python3
"""Writes the bad-config corpus: one config per file, each with one mistake.

Every file starts with `# expect: TEXT` (a fragment of the error `clusterd check` and a reload
must print) and, where the error has a position, `# at: LINE:COL`. Cases are written with a
`@@` where the error points; the marker is removed. Run it after changing a case:
    python3 tests/bad_configs/generate.py
Files made at test time (directories, FIFOs, oversized files, symlink loops) are in
tests/e2e/test_bad_configs.py."""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))

# A valid program; {extra} adds keys to it.
PROGRAM = """programs:
  web:
    cores: 1
    listen:
      - {{name: http, address: "127.0.0.1:1"}}
{extra}"""

CASES = []


def case(name, expect, body=None, program=None, raw=None):
    """body: the whole config; program: lines added to the valid program; raw: bytes."""
    CASES.append((name, expect, body, program, raw))


# ---- wrong types, key by key (programs.web.KEY) ----
for key, value, expect in [
    ("command", '"/bin/app --flag"', "expected a sequence of strings (argv)"),
    ("command", "{app: 1}", "expected a sequence of strings (argv)"),
    ("command", "[]", "expected a non-empty sequence of strings (argv)"),
    ("command", '[@@""]', "expected the program to run"),
    ("cores", "[1]", 'expected "auto" or an integer from 1 to 4096'),
    ("cores", "{n: 1}", 'expected "auto" or an integer from 1 to 4096'),
    ("cores", "many", 'expected "auto" or an integer from 1 to 4096'),
    ("cores", "1.5", 'expected "auto" or an integer from 1 to 4096'),
    ("env", "[A=1]", "expected a map"),
    ("env", '"A=1"', "expected a map"),
    ("inherit_env", "maybe", "expected true or false"),
    ("inherit_env", "[true]", "expected true or false"),
    ("user", "[root]", "expected a string"),
    ("user", "{name: root}", "expected a string"),
    ("user", '""', "expected a user or group name or id"),
    ("group", "[root]", "expected a string"),
    ("group", '""', "expected a user or group name or id"),
    ("cwd", "[/tmp]", "expected a string"),
    ("cwd", "tmp", "expected an absolute directory path"),
    ("umask", "0999", "expected an octal umask from 0 to 0777"),
    ("umask", "01000", "expected an octal umask from 0 to 0777"),
    ("umask", "[022]", "expected an octal umask from 0 to 0777"),
    ("ready", "soon", 'expected "notify", "started" or "listening"'),
    ("ready", "[notify]", 'expected "notify", "started" or "listening"'),
    ("ipc", "deno", 'expected "none" or "node"'),
    ("shutdown_message", "maybe", "expected true or false"),
    ("start_time", "fast", "expected a duration like 250ms"),
    ("start_timeout", "0s", "expected a duration greater than 0"),
    ("start_timeout", "[30s]", "expected a duration like 250ms"),
    ("watchdog", "10", "expected a duration like 250ms"),
    ("watchdog", "1d", "expected a duration like 250ms"),
    ("watchdog", "-1s", "expected a duration like 250ms"),
    ("restart", "sometimes", 'expected "always", "on-failure" or "never"'),
    ("restart", "{always: true}", 'expected "always", "on-failure" or "never"'),
    ("backoff", "5s", "expected a map"),
    ("backoff", "[1s, 5s]", "expected a map"),
    ("stop_signal", "FOO", "expected a signal name or number"),
    ("stop_signal", "0", "expected a signal name or number"),
    ("stop_signal", "65", "expected a signal name or number"),
    ("stop_signal", "[TERM]", "expected a signal name or number"),
    ("stop_timeout", "soon", "expected a duration like 250ms"),
    ("cpu_affinity", "2", "expected true or false"),
    ("output", "relative/file.log", 'expected "inherit", "capture" or an absolute file path'),
    ("output", "[capture]", "expected a string"),
    ("max_surge", "0", "expected an integer from 1 to 4096"),
    ("max_surge", "4097", "expected an integer from 1 to 4096"),
    ("max_surge", "two", "expected an integer from 1 to 4096"),
    ("rlimits", "[nofile]", "expected a map"),
    ("rlimits", "65536", "expected a map"),
    ("memory_limit", "lots", "expected a size like 512M or 2G"),
    ("memory_limit", "-1", "expected a size like 512M or 2G"),
    ("memory_limit", "1Q", "expected a size like 512M or 2G"),
    ("memory_limit", "99999999999T", "expected a size like 512M or 2G"),
    ("min_uptime", "long", "expected a duration like 250ms"),
    ("abort_timeout", "[2s]", "expected a duration like 250ms"),
    ("env_file", "{a: b}", "expected a file path or a sequence of file paths"),
    ("env_file", '[@@"-"]', "expected a file path"),
    ("max_age", "old", "expected a duration like 250ms"),
    ("max_age_jitter", "[1s]", "expected a duration like 250ms"),
    ("depends_on", "{db: 1}", "expected a program name or a sequence of program names"),
    ("hooks", "exited", "expected a sequence of {on, command, timeout} maps"),
    ("listen", "http", "expected a sequence of {name, address, reuseport, backlog} maps"),
    ("listen", "{name: http}", "expected a sequence of {name, address, reuseport, backlog} maps"),
]:
    n = sum(1 for c in CASES if c[0].startswith(f"type_{key}_"))
    path = f"programs.web.{key}[0]" if value.startswith("[@@") else f"programs.web.{key}"
    value = value if "@@" in value else "@@" + value
    case(f"type_{key}_{n}", f"{path}: {expect}", program=f"    {key}: {value}\n")

# ---- ranges and overflow ----
for key, value, expect in [
    ("cores", "0", '"auto" or an integer from 1 to 4096'),
    ("cores", "-1", '"auto" or an integer from 1 to 4096'),
    ("cores", "4097", '"auto" or an integer from 1 to 4096'),
    ("cores", "99999999999999999999", '"auto" or an integer from 1 to 4096'),
    ("start_timeout", "169h", "a duration of at most 168h"),
    ("start_time", "2562048h", "a duration of at most 168h"),
    ("watchdog", "2562048h", "a duration of at most 168h"),
    ("watchdog", "10081m", "a duration of at most 168h"),
    ("stop_timeout", "604801s", "a duration of at most 168h"),
    ("stop_timeout", "9223372036854775807ms", "a duration of at most 168h"),
    ("stop_timeout", "99999999999999999999h", "a duration like 250ms"),
    ("min_uptime", "3000000h", "a duration of at most 168h"),
    ("abort_timeout", "168h1ms", "a duration of at most 168h"),
]:
    n = sum(1 for c in CASES if c[0].startswith(f"range_{key}_"))
    case(f"range_{key}_{n}", f"programs.web.{key}: expected {expect}",
         program=f"    {key}: @@{value}\n")

for name, value, expect in [
    ("backoff_zero", "{initial: 0s, max: @@0s}", "backoff.max: expected at least 100ms"),
    ("backoff_tiny", "{initial: 0s, max: @@50ms}", "backoff.max: expected at least 100ms"),
    ("backoff_zero_only_max", "{max: @@0}", "backoff.max: expected at least 100ms"),
    ("backoff_max_below_initial", "{initial: 10s, max: @@1s}",
     "backoff.max: expected max to be at least initial (10s), got 1s"),
    ("backoff_initial_overflow", "{initial: @@2562048h, max: 5s}",
     "backoff.initial: expected a duration of at most 168h"),
    ("backoff_max_overflow", "{initial: 1s, max: @@2562048h}",
     "backoff.max: expected a duration of at most 168h"),
    ("backoff_initial_word", "{initial: @@none}", "backoff.initial: expected a duration"),
    ("backoff_reset_after", "{reset_after: @@10s}", "backoff.reset_after: backoff.reset_after is gone"),
    ("backoff_unknown_key", "{@@maximum: 5s}", 'backoff: unknown key "maximum"'),
]:
    case(f"range_{name}", f"programs.web.{expect}", program=f"    backoff: {value}\n")

for res, value, expect in [
    ("nofile", "0", "expected at least 16"),
    ("nofile", "15", "expected at least 16"),
    ("nofile", "-1", 'expected a non-negative integer or "unlimited"'),
    ("nofile", "lots", 'expected a non-negative integer or "unlimited"'),
    ("nofile", "9223372036854775808", 'expected a non-negative integer or "unlimited"'),
    ("nofile", "99999999999999999999", 'expected a non-negative integer or "unlimited"'),
    ("nproc", "0", "expected at least 1"),
    ("cpu", "0", "expected at least 1"),
    ("stack", "1K", "expected at least 64K"),
    ("as", "1M", "expected at least 64M"),
    ("data", "0", "expected at least 16M"),
    ("core", "lots", 'expected a size like 65536, 512K, 64M or 2G, or "unlimited"'),
    ("as", "16E", 'expected a size like 65536, 512K, 64M or 2G, or "unlimited"'),
    ("memlock", "[1M]", 'expected a size like 65536, 512K, 64M or 2G, or "unlimited"'),
]:
    n = sum(1 for c in CASES if c[0].startswith(f"rlimit_{res}_"))
    case(f"rlimit_{res}_{n}", f"programs.web.rlimits.{res}: {expect}",
         program=f"    rlimits: {{{res}: @@{value}}}\n")
case("rlimit_soft_above_hard", "the soft limit (4096) must not exceed the hard limit (1024)",
     program="    rlimits: {nofile: {soft: @@4096, hard: 1024}}\n")
case("rlimit_only_soft", 'expected both "soft" and "hard"',
     program="    rlimits: {nofile: @@{soft: 4096}}\n")
case("rlimit_unknown", 'programs.web.rlimits: unknown key "files"',
     program="    rlimits: {@@files: 10}\n")
case("rlimit_soft_zero", "programs.web.rlimits.nofile.soft: expected at least 16",
     program="    rlimits: {nofile: {soft: @@0, hard: 1024}}\n")

# ---- listen entries ----
def listen(entries, name):
    return f"""programs:
  web:
    cores: 1
    listen:
{entries}"""

for name, entries, expect in [
    ("no_address", "      - @@{name: http}\n", 'missing required key "address"'),
    ("scalar_entry", "      - @@127.0.0.1:80\n", 'expected a map with an "address" key'),
    ("hostname", '      - {name: http, address: @@"localhost:8080"}\n', "expected \"host:port\""),
    ("no_port", '      - {name: http, address: @@"127.0.0.1"}\n', "expected \"host:port\""),
    ("port_zero", '      - {name: http, address: @@"127.0.0.1:0"}\n', "expected \"host:port\""),
    ("port_big", '      - {name: http, address: @@"127.0.0.1:65536"}\n', "expected \"host:port\""),
    ("port_neg", '      - {name: http, address: @@"127.0.0.1:-1"}\n', "expected \"host:port\""),
    ("v6_no_brackets", '      - {name: http, address: @@"::1:80"}\n', "expected \"host:port\""),
    ("bad_ip", '      - {name: http, address: @@"300.1.1.1:80"}\n', "expected \"host:port\""),
    ("address_map", '      - {name: http, address: @@{host: x}}\n', "expected a string"),
    ("name_space", '      - {name: @@"my http", address: "127.0.0.1:1"}\n',
     "expected a name of letters, digits"),
    ("name_colon", '      - {name: @@"a:b", address: "127.0.0.1:1"}\n',
     "expected a name of letters, digits"),
    ("reuseport_word", '      - {name: http, address: "127.0.0.1:1", reuseport: @@sometimes}\n',
     "expected true or false"),
    ("backlog_zero", '      - {name: http, address: "127.0.0.1:1", backlog: @@0}\n',
     "expected an integer from 1 to 65535"),
    ("backlog_big", '      - {name: http, address: "127.0.0.1:1", backlog: @@65536}\n',
     "expected an integer from 1 to 65535"),
    ("backlog_word", '      - {name: http, address: "127.0.0.1:1", backlog: @@deep}\n',
     "expected an integer from 1 to 65535"),
    ("unknown_key", '      - {name: http, address: "127.0.0.1:1", @@port: 80}\n',
     'unknown key "port"'),
    ("duplicate_name", '      - {name: a, address: "127.0.0.1:1"}\n'
                       '      - {name: @@a, address: "127.0.0.1:2"}\n', 'duplicate listen name "a"'),
    ("same_address", '      - {name: a, address: "127.0.0.1:1"}\n'
                     '      - {name: b, address: @@"127.0.0.1:1"}\n', "is already used by"),
    ("wildcard_overlap", '      - {name: a, address: "0.0.0.0:1"}\n'
                         '      - {name: b, address: @@"127.0.0.1:1"}\n', "overlaps 0.0.0.0:1"),
]:
    case(f"listen_{name}", expect, body=listen(entries, name))

many = "".join(f'      - {{name: l{i}, address: "127.0.0.1:{1000 + i}"}}\n' for i in range(300))
case("listen_300_entries", "expected at most 256 listen entries, got 300",
     body="programs:\n  web:\n    cores: 1\n    listen:\n      @@" + many.lstrip())
many257 = "".join(f'      - {{name: l{i}, address: "127.0.0.1:{1000 + i}"}}\n' for i in range(257))
case("listen_257_entries", "expected at most 256 listen entries, got 257",
     body="programs:\n  web:\n    cores: 1\n    listen:\n      @@" + many257.lstrip())
case("listen_two_programs_one_port", "is already used by programs.a.listen[0]", body="""programs:
  a:
    cores: 1
    listen: [{name: http, address: "127.0.0.1:1"}]
  b:
    cores: 1
    listen: [{name: http, address: @@"127.0.0.1:1"}]
""")
case("metrics_on_listen_port", "is already used by", body="""daemon:
  metrics: "127.0.0.1:1"
programs:
  web:
    cores: 1
    listen: [{name: http, address: @@"127.0.0.1:1"}]
""")

# ---- env ----
for name, line, expect in [
    ("digit_name", "    env: {@@1ABC: x}\n", "is not a valid environment variable name"),
    ("dash_name", "    env: {@@MY-VAR: x}\n", "is not a valid environment variable name"),
    ("reserved_listen", "    env: {@@LISTEN_FDS: '3'}\n", "LISTEN_FDS is reserved"),
    ("reserved_notify", "    env: {@@NOTIFY_SOCKET: /x}\n", "NOTIFY_SOCKET is reserved"),
    ("reserved_clusterd", "    env: {@@CLUSTERD_WORKER_ID: '0'}\n", "CLUSTERD_WORKER_ID is reserved"),
    ("value_map", "    env: {A: @@{b: c}}\n", "expected a string"),
    ("value_seq", "    env: {A: @@[1, 2]}\n", "expected a string"),
    ("duplicate", "    env:\n      A: x\n      @@A: y\n", 'duplicate key "A"'),
]:
    case(f"env_{name}", expect, program=line)

# ---- env_file, include, depends_on, max_age, hooks (issue 14) ----
case("env_file_missing", "cannot read: No such file or directory (programs.web.env_file at",
     program="    env_file: /nonexistent-clusterd/app.env\n")
case("include_not_a_pattern", "include: expected a glob pattern or a sequence of glob patterns",
     body="include: @@{a: b}\n" + PROGRAM.format(extra=""))
case("depends_on_unknown", 'programs.web.depends_on[0]: no program "dbx" (programs: web)',
     program="    depends_on: [@@dbx]\n")
case("depends_on_self", "programs.web.depends_on: dependency cycle web -> web",
     program="    depends_on: @@web\n")
case("depends_on_duplicate", 'programs.api.depends_on[1]: duplicate "web"',
     body=PROGRAM.format(extra="") + "  api:\n    cores: 1\n    depends_on: [web, @@web]\n")
case("depends_on_cycle", "programs.db.depends_on[0]: dependency cycle web -> db -> web",
     body=PROGRAM.format(extra="    depends_on: [db]\n") +
     "  db:\n    cores: 1\n    depends_on: [@@web]\n")
case("max_age_jitter_too_big", "programs.web.max_age_jitter: must be less than max_age (1h), got 2h",
     program="    max_age: 1h\n    max_age_jitter: @@2h\n")
case("max_age_jitter_equal", "programs.web.max_age_jitter: must be less than max_age (30m), got 30m",
     program="    max_age: 30m\n    max_age_jitter: @@30m\n")
case("hooks_bad_event", "programs.web.hooks[0].on: expected an event name (started, restarted,",
     program="    hooks: [{on: @@crashed, command: [/bin/true]}]\n")
case("hooks_bad_event_in_list", "programs.web.hooks[0].on[1]: expected an event name",
     program="    hooks: [{on: [exited, @@exit], command: [/bin/true]}]\n")
case("hooks_command_string", "(a hook runs its argv, no shell)",
     program='    hooks: [{on: exited, command: @@"/usr/bin/logger -t web"}]\n')
case("hooks_command_empty", "programs.web.hooks[0].command: expected a non-empty sequence",
     program="    hooks: [{on: exited, command: @@[]}]\n")
case("hooks_no_command", 'programs.web.hooks[0]: missing required key "command"',
     program="    hooks:\n      - @@on: exited\n")
case("hooks_timeout_zero", "programs.web.hooks[0].timeout: expected a duration greater than 0",
     program="    hooks: [{on: exited, command: [/bin/true], timeout: @@0s}]\n")
case("hooks_timeout_long", "programs.web.hooks[0].timeout: expected a duration of at most 1h",
     program="    hooks: [{on: exited, command: [/bin/true], timeout: @@2h}]\n")
case("hooks_unknown_key", 'programs.web.hooks[0]: unknown key "shell"',
     program="    hooks: [{on: exited, command: [/bin/true], @@shell: true}]\n")
case("hooks_17", "programs.web.hooks: expected at most 16 hooks, got 17",
     program="    hooks: @@[" + ", ".join(["{on: exited, command: [/bin/true]}"] * 17) + "]\n")

# ---- placeholders ----
case("placeholder_unknown", 'unknown listener "api" in {listen.api.fd}',
     program='    command: [/bin/true, @@"--fd={listen.api.fd}"]\n')
case("placeholder_malformed", 'malformed placeholder "{listen.http"',
     program='    command: [/bin/true, @@"--fd={listen.http"]\n')
case("placeholder_no_fd", 'malformed placeholder "{listen.http}"',
     program='    command: [/bin/true, @@"{listen.http}"]\n')
case("placeholder_empty", 'unknown listener "" in {listen..fd}',
     program='    command: [/bin/true, @@"{listen..fd}"]\n')

# ---- daemon section ----
for key, value, expect in [
    ("control", "relative.sock", "expected an absolute socket path of at most 107 bytes"),
    ("control", "/" + "x" * 120, "expected an absolute socket path of at most 107 bytes"),
    ("control", "[/run/x.sock]", "expected a string"),
    ("control_group", "[wheel]", "expected a string"),
    ("state_dir", "state", "expected an absolute directory path"),
    ("state_dir", "{a: b}", "expected a string"),
    ("log_level", "loud", 'expected "trace", "debug", "info", "warn" or "error"'),
    ("log_level", "INFO", 'expected "trace", "debug", "info", "warn" or "error"'),
    ("log_file", "[a.log]", "expected a string"),
    ("metrics", "9464", 'expected "" or "host:port"'),
    ("metrics", '"localhost:9464"', 'expected "" or "host:port"'),
    ("metrics", "{port: 9464}", "expected a string"),
    ("shutdown_timeout", "30", "expected a duration like 250ms"),
    ("shutdown_timeout", "2562048h", "expected a duration of at most 168h"),
    ("shutdown_timeout", "10000000000000000000ms", "expected a duration like 250ms"),
]:
    n = sum(1 for c in CASES if c[0].startswith(f"daemon_{key}_"))
    case(f"daemon_{key}_{n}", f"daemon.{key}: {expect}",
         body=f"daemon:\n  {key}: @@{value}\n" + PROGRAM.format(extra=""))
case("daemon_unknown_key", 'daemon: unknown key "contol" (did you mean "control"?)',
     body="daemon:\n  @@contol: /tmp/x.sock\n" + PROGRAM.format(extra=""))
case("daemon_is_sequence", "daemon: expected a map", body="daemon: @@[a, b]\n" + PROGRAM.format(extra=""))

# ---- document structure ----
case("unknown_program_key", 'programs.web: unknown key "corse" (did you mean "cores"?)',
     program="    @@corse: 2\n")
case("unknown_top_key", 'unknown key "deamon" (did you mean "daemon"?)',
     body="@@deamon: {}\n" + PROGRAM.format(extra=""))
case("missing_programs", 'missing required key "programs"', body="@@daemon:\n  log_level: info\n")
case("programs_empty_map", "programs: expected at least one program", body="programs: @@{}\n")
case("programs_sequence", "programs: expected a map", body="programs: @@[web]\n")
case("programs_scalar", "programs: expected a map", body="programs: @@web\n")
case("program_is_scalar", "programs.web: expected a map", body="programs:\n  web: @@yes\n")
case("program_name_space", 'invalid program name "my web"',
     body='programs:\n  @@"my web":\n    cores: 1\n')
case("program_name_long", "invalid program name",
     body="programs:\n  @@" + "w" * 65 + ":\n    cores: 1\n")
case("program_name_slash", 'invalid program name "a/b"', body="programs:\n  @@a/b:\n    cores: 1\n")
case("duplicate_program", 'duplicate key "web"',
     body="programs:\n  web:\n    cores: 1\n  @@web:\n    cores: 2\n")
case("duplicate_key", 'duplicate key "cores"', body="programs:\n  web:\n    cores: 1\n    @@cores: 2\n")
case("root_sequence", "expected a map", body="@@- programs\n- web\n")
case("root_scalar", "expected a map", body="@@programs\n")
case("empty_file", "the config is empty", body="")
case("only_comments", "the config is empty", body="# nothing here\n# at all\n")
case("two_documents", "expected one YAML document, found another",
     body=PROGRAM.format(extra="") + "@@---\nprograms: {}\n")
case("yaml_comma_alias_loop", 'expected a map with a "programs" key, found no value',
     body="@@, *a-:\n web:\n")
case("yaml_lone_comma", 'expected a map with a "programs" key, found no value', body="@@,\n")
case("non_string_key", "expected a string key",
     body="programs:\n  web:\n    @@[a, b]: 1\n")
case("start_time_not_below_timeout", "must be less than start_timeout (5s) with ready: started",
     program="    ready: started\n    start_timeout: 5s\n    start_time: @@5s\n")

# ---- YAML syntax and encoding ----
case("yaml_bad_indent", "invalid YAML", body="programs:\n  web:\n    cores: 1\n   @@listen: []\n")
case("yaml_text_after_quote", "invalid YAML: end of map not found",
     body='programs:\n  web:\n    user: "a" b\n')
case("yaml_unclosed_quote_in_flow", "invalid YAML: end of map flow not found",
     body='programs:\n  web: {user: "root}\n')
case("yaml_unclosed_flow", "invalid YAML", body="programs:\n  web: {cores: 1\n")
case("yaml_tab_indent", "invalid YAML", body="programs:\n\tweb:\n\t\tcores: 1\n")
case("yaml_bad_escape", "invalid YAML", body='programs:\n  web:\n    user: "ro\\qot"\n')
case("yaml_unknown_alias", "invalid YAML", body="programs:\n  web: *nothing\n")
case("yaml_nesting_40", "nesting deeper than 32 levels",
     body="programs:\n  web:\n    env: " + "[" * 40 + "]" * 40 + "\n")
case("yaml_nesting_5000", "nesting deeper than 32 levels",
     body="programs: " + "[" * 5000 + "]" * 5000 + "\n")
case("yaml_nesting_maps", "nesting deeper than 32 levels",
     body="programs: " + "{a: " * 40 + "1" + "}" * 40 + "\n")
laughs = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n"
for i in range(1, 9):
    laughs += f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]\n"
case("yaml_billion_laughs", "YAML nodes (aliases count at every use)", body=laughs)
case("nul_byte", "contains a NUL byte at 5:13",
     raw=b"programs:\n  web:\n    cores: 1\n    user: ro\0ot\n")
case("nul_byte_first", "contains a NUL byte at 2:1", raw=b"\0programs: {}\n")
case("utf8_invalid_byte", "invalid UTF-8 at 5:11",
     raw=b"programs:\n  web:\n    cores: 1\n    user: \xff\xfe\n")
case("utf8_truncated", "invalid UTF-8 at 5:12",
     raw=b"programs:\n  web:\n    cores: 1\n    user: a\xc3\n")
case("utf8_overlong", "invalid UTF-8 at 5:11",
     raw=b"programs:\n  web:\n    cores: 1\n    user: \xc0\xaf\n")
case("utf8_surrogate", "invalid UTF-8 at 5:11",
     raw=b"programs:\n  web:\n    cores: 1\n    user: \xed\xa0\x80\n")
case("utf8_above_max", "invalid UTF-8 at 5:11",
     raw=b"programs:\n  web:\n    cores: 1\n    user: \xf4\x90\x80\x80\n")
case("latin1_text", "invalid UTF-8 at 5:14",
     raw=b"programs:\n  web:\n    cores: 1\n    user: Jos\xe9\n")
case("utf16_with_bom", "invalid UTF-8 at 2:1",
     raw="programs:\n  web:\n    cores: 1\n".encode("utf-16"))
case("bom_then_error", 'programs.web: unknown key "corse"',
     raw=b"programs:\n  web:\n    corse: 1\n")
case("bom_in_the_middle", 'unknown key "\ufeffprograms"',
     raw=b"\xef\xbb\xbfprograms:\n  web:\n    cores: 1\n")

case("long_multibyte_value", "expected true or false, got",
     program="    cpu_affinity: @@" + "\u00e9" * 40 + "\n")

# ---- run-time checks: what `run` would fail on, found by `check` ----
case("runtime_unknown_user", 'unknown user "clusterd-no-such-user"',
     program="    user: @@clusterd-no-such-user\n")
case("runtime_unknown_uid", 'unknown user "4000000000"', program="    user: @@4000000000\n")
case("runtime_unknown_group", 'unknown group "clusterd-no-such-group"',
     program="    group: @@clusterd-no-such-group\n")
case("runtime_command_missing", 'executable "/nonexistent/clusterd-app" not found',
     program="    command: [@@/nonexistent/clusterd-app]\n")
case("runtime_command_not_in_path", 'executable "clusterd-no-such-program" not found in PATH',
     program="    command: [@@clusterd-no-such-program, --flag]\n")
case("runtime_command_directory", 'executable "/tmp" is a directory', program="    command: [@@/tmp]\n")
case("runtime_command_not_executable", 'executable "/etc/passwd" is not executable',
     program="    command: [@@/etc/passwd]\n")
case("runtime_command_device", 'executable "/dev/null" is not a regular file',
     program="    command: [@@/dev/null]\n")
case("runtime_command_path_inherit", "not found in PATH",
     program="    inherit_env: false\n    command: [@@clusterd-definitely-missing]\n")
case("runtime_output_directory", "/tmp is a directory", program="    output: @@/tmp\n")
case("runtime_output_no_dir", "directory /nonexistent-clusterd-dir of",
     program="    output: @@/nonexistent-clusterd-dir/out.log\n")
case("runtime_output_under_file", "/etc/passwd/out.log: Not a directory", program="    output: @@/etc/passwd/out.log\n")
case("runtime_cwd_missing", "/nonexistent-clusterd-dir: No such file or directory",
     program="    cwd: @@/nonexistent-clusterd-dir\n")
case("runtime_cwd_file", "/etc/passwd is not a directory", program="    cwd: @@/etc/passwd\n")
case("runtime_log_file_directory", "daemon.log_file: /tmp is a directory",
     body="daemon:\n  log_file: @@/tmp\n" + PROGRAM.format(extra=""))
case("runtime_log_file_under_file", "/etc/passwd/clusterd.log: Not a directory",
     body="daemon:\n  log_file: @@/etc/passwd/clusterd.log\n" + PROGRAM.format(extra=""))
case("runtime_log_file_relative", "daemon.log_file: expected an absolute file path",
     body="daemon:\n  log_file: @@clusterd.log\n" + PROGRAM.format(extra=""))
case("runtime_control_group", 'daemon.control_group: unknown group "clusterd-no-such-group"',
     body="daemon:\n  control_group: @@clusterd-no-such-group\n" + PROGRAM.format(extra=""))
case("runtime_second_program_bad", 'unknown user "clusterd-no-such-user"', body="""programs:
  web:
    cores: 1
    listen: [{name: http, address: "127.0.0.1:1"}]
  other:
    cores: 1
    user: @@clusterd-no-such-user
""")


def render(name, expect, body, program, raw):
    if name.startswith("bom_then"):  # a byte order mark must come first, before the header
        return b"\xef\xbb\xbf# expect: " + expect.encode() + b"\n" + raw
    if raw is not None:
        return b"# expect: " + expect.encode() + b"\n" + raw
    text = body if body is not None else PROGRAM.format(extra=program)
    if body is None and program.lstrip().startswith(("cores:", "listen:")):
        text = "programs:\n  web:\n" + program
    header = f"# expect: {expect}\n"
    at = ""
    if "@@" in text:
        before = text[:text.index("@@")]
        line = before.count("\n") + 3  # two header lines
        col = len(before) - (before.rfind("\n") + 1) + 1
        at = f"# at: {line}:{col}\n"
        text = text.replace("@@", "", 1)
    else:
        header += "# at: -\n"
    return (header + at + text).encode()


def main():
    names = [c[0] for c in CASES]
    dupes = {n for n in names if names.count(n) > 1}
    if dupes:
        sys.exit(f"duplicate case names: {sorted(dupes)}")
    for old in os.listdir(HERE):
        if old.endswith(".yaml"):
            os.remove(os.path.join(HERE, old))
    for c in CASES:
        with open(os.path.join(HERE, c[0] + ".yaml"), "wb") as f:
            f.write(render(*c))
    print(f"{len(CASES)} files")


if __name__ == "__main__":
    main()
