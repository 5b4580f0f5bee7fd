"""Secrets in command lines: argv is redacted before anything leaves the process.

kubelet expands `$(VAR)` from Secret-backed environment variables into a
container's command and args, so a secret in argv is the normal case, not
a mistake.  Every argv the tracer sees (exec events, processes found
running at start, the command and args of CRI messages) goes through one
`ArgvRedaction` before it is decoded, stored, exported, printed or logged:
`tracer.events.sanitize` for the kernel's events, `tracer.cri.redact` for
CRI messages.

The model is Tetragon's redaction filters (pkg/fieldfilters/redaction.go,
`--redaction-filters`): a filter is a JSON object with `redact`, regular
expressions over the arguments joined by spaces whose capture groups are
replaced by `*****`, and optionally `binary_regex`, regular expressions of
which one must match the executable's path.  Tetragon has no default
filters; here the default rules below always apply, and user filters come
on top:

- `key=value` in one argument (`--password=x`, `DB_PASSWORD=x`, `-token=x`)
  and `key: value` (`Authorization: Bearer x`), when the key looks like a
  credential (`CREDENTIAL_KEY`): the value;
- `--key value` (`--password x`, `-api-key x`): the argument after a flag
  whose name looks like a credential;
- `"key": "value"` inside an argument (inline JSON), same keys;
- a URL's password (`scheme://user:password@host`);
- AWS access key ids (`AKIA…`, `ASIA…`); their secret keys go by their
  key (`aws_secret_access_key=…`, `--secret-access-key …`).

`drop_args` keeps only argv[0] of every program but the runtime's own
(runc, the shim, containerd, CNI plugins), whose arguments name the
containers the tracer follows and carry no secrets.

Redaction keeps the number of arguments: what a rule hides becomes
`*****`, inside the argument it was in.  It is idempotent: redacting a
redacted argv changes nothing.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from tracer.runtimes import CONTAINERD_BINARIES, RUNC_BINARIES, SHIM_BINARIES

REDACTED = "*****"  # Tetragon's REDACTION_STR

# A key (of key=value, of a --flag) that names a credential.
CREDENTIAL_KEY = re.compile(
    r"passw(?:or)?d|passphrase|secret|token|api[-_.]?key|auth|credential|private[-_.]?key|access[-_.]?key"
    r"|^pass$|^pwd$",
    re.IGNORECASE,
)
_KEY = r"[A-Za-z0-9_.-]+"
# a value inside a longer argument (a shell command): a quoted string, an
# auth scheme and its token, or up to the next blank, quote or ; & | )
_VALUE = r"""(?:"[^"]*"|'[^']*'|(?i:bearer|basic|token|digest|negotiate)\s+[^\s"';&|)]+|[^\s"';&|)]+)"""
_START = r"""(?<![^\s"'{,;(])"""  # a key begins an argument or follows a blank, a quote, {, ;
# one argument that is a key and its value: --password=x, DB_PASSWORD=x,
# "Authorization: Bearer x" (the value may hold blanks)
_WHOLE_PAIR = re.compile(rf"^(?P<key>\s*-{{0,2}}{_KEY})(?:=|\s*:\s*)(?P<value>\S.*)$", re.DOTALL)
# one argument that is a flag: --password (its value is the next argument)
_FLAG = re.compile(rf"^-{{1,2}}(?P<key>{_KEY})$")
# inside an argument: key=value, key: value, --key value, "key": "value"
_INLINE_PAIR = re.compile(rf"{_START}(?P<key>-{{0,2}}{_KEY})(?:=|:[ \t]*)(?P<value>{_VALUE})")
_INLINE_FLAG = re.compile(rf"{_START}-{{1,2}}(?P<key>{_KEY})[ \t]+(?P<value>(?!-){_VALUE})")
_JSON_PAIR = re.compile(r'"(?P<key>[^"\\]{1,64})"\s*:\s*"(?P<value>(?:[^"\\]|\\.)*)"')
_URL_PASSWORD = re.compile(r"(?P<before>[A-Za-z][A-Za-z0-9+.-]*://[^\s/@:]*:)(?P<value>[^\s/@]+)(?=@)")
_AWS_ACCESS_KEY_ID = re.compile(r"(?<![A-Z0-9])(?:AKIA|ASIA|ABIA|ACCA|A3T[A-Z0-9])[A-Z0-9]{16}(?![A-Z0-9])")

# Programs whose arguments stay whole with drop_args: the runtime's own.
RUNTIME_PROGRAMS = frozenset(RUNC_BINARIES + SHIM_BINARIES + CONTAINERD_BINARIES)
CNI_DIRECTORY_MARKER = "/cni/"


class FilterError(ValueError):
    """A user's redaction filter that is not one (bad JSON, fields, regex)."""


@dataclass(frozen=True)
class RedactionFilter:
    """One of Tetragon's redaction filters: `redact` patterns over the
    arguments joined by spaces (capture groups are redacted), for programs
    whose path matches one of `binary_regex` (any program when empty)."""

    redact: tuple[re.Pattern[str], ...]
    binary_regex: tuple[re.Pattern[str], ...] = ()

    def applies_to(self, filename: str) -> bool:
        return not self.binary_regex or any(r.search(filename) for r in self.binary_regex)

    def as_json(self) -> dict:
        return {"redact": [r.pattern for r in self.redact], "binary_regex": [r.pattern for r in self.binary_regex]}


def parse_filters(text: str) -> tuple[RedactionFilter, ...]:
    """Filters from JSON objects, one after the other (Tetragon's
    `--redaction-filters` format: `{"redact": ["--pw(?:\\\\s+|=)(\\\\S*)"]}`,
    optionally with `"binary_regex": […]`); whitespace or newlines between
    them."""
    decoder = json.JSONDecoder()
    filters = []
    position = 0
    text = text.strip()
    while position < len(text):
        try:
            value, end = decoder.raw_decode(text, position)
        except json.JSONDecodeError as error:
            raise FilterError(f"redaction filter at character {position} is not JSON: {error.msg}") from None
        filters.append(_filter(value))
        position = end
        while position < len(text) and text[position] in " \t\r\n,":
            position += 1
    return tuple(filters)


def _filter(value: object) -> RedactionFilter:
    if not isinstance(value, dict):
        raise FilterError("a redaction filter is a JSON object")
    unknown = set(value) - {"redact", "binary_regex"}
    if unknown:
        raise FilterError(f"unknown field(s) in a redaction filter: {', '.join(sorted(unknown))}")

    def patterns(name: str) -> tuple[re.Pattern[str], ...]:
        raw = value.get(name, [])
        raw = [raw] if isinstance(raw, str) else raw
        if not isinstance(raw, list) or not all(isinstance(p, str) for p in raw):
            raise FilterError(f"{name} must be a list of regular expressions")
        compiled = []
        for pattern in raw:
            try:
                compiled.append(re.compile(pattern))
            except re.error as error:
                raise FilterError(f"{name} {pattern!r}: {error}") from None
        return tuple(compiled)

    redact = patterns("redact")
    if not redact:
        raise FilterError("a redaction filter needs at least one pattern in `redact`")
    return RedactionFilter(redact, patterns("binary_regex"))


@dataclass(frozen=True)
class ArgvRedaction:
    """What is hidden of every argv: the default rules, `filters`, and
    everything after argv[0] with `drop_args` (but the runtime's own)."""

    filters: tuple[RedactionFilter, ...] = ()
    drop_args: bool = False

    def describe(self) -> dict:
        """For the effective configuration (patterns are not secrets)."""
        return {"default_rules": True, "filters": [f.as_json() for f in self.filters], "drop_args": self.drop_args}

    def redact(self, filename: str, argv: Sequence[str]) -> tuple[str, ...]:
        """argv as it may leave the process."""
        argv = tuple(argv)
        if not argv:
            return argv
        if self.drop_args and not runtime_program(filename, argv):
            return argv[:1]
        redacted = default_redact(argv)
        for rule in self.filters:
            if rule.applies_to(filename):
                redacted = _apply_filter(rule, redacted)
        return redacted


DEFAULT_REDACTION = ArgvRedaction()


def runtime_program(filename: str, argv: Sequence[str]) -> bool:
    """The runtime's own programs: their arguments are the tracer's
    evidence (container ids, bundles) and carry no secrets."""
    names = {filename.rsplit("/", 1)[-1], (argv[0] if argv else "").rsplit("/", 1)[-1]}
    return bool(names & RUNTIME_PROGRAMS) or CNI_DIRECTORY_MARKER in filename


def credential_key(key: str) -> bool:
    return CREDENTIAL_KEY.search(key.strip().lstrip("-")) is not None


def default_redact(argv: Sequence[str]) -> tuple[str, ...]:
    """The default rules (see the module's docstring), argument by argument."""
    out = list(argv)
    value_of_flag = False
    for index, arg in enumerate(argv):
        if value_of_flag:
            out[index], value_of_flag = REDACTED, False
            continue
        out[index] = redact_text(arg)
        flag = _FLAG.match(arg) if index > 0 else None
        value_of_flag = flag is not None and credential_key(flag.group("key"))
    return tuple(out)


def redact_text(arg: str) -> str:
    """One argument (or any text that may hold a command line) with the
    values of credential-like keys, URL passwords and AWS key ids hidden."""
    whole = _WHOLE_PAIR.match(arg)
    if whole is not None and credential_key(whole.group("key")):
        return arg[:whole.start("value")] + REDACTED
    for pattern in (_INLINE_PAIR, _INLINE_FLAG, _JSON_PAIR):
        arg = pattern.sub(_hide_value, arg)
    arg = _URL_PASSWORD.sub(lambda m: m.group("before") + REDACTED, arg)
    return _AWS_ACCESS_KEY_ID.sub(REDACTED, arg)


def _hide_value(match: re.Match[str]) -> str:
    if not credential_key(match.group("key")):
        return match.group(0)
    start, end = match.span("value")
    value = match.group("value")
    quote = value[0] if value[:1] in ("'", '"') and value[-1:] == value[:1] and len(value) > 1 else ""
    text = match.group(0)
    offset = match.start()
    return text[:start - offset] + quote + REDACTED + quote + text[end - offset:]


def _apply_filter(rule: RedactionFilter, argv: tuple[str, ...]) -> tuple[str, ...]:
    """Tetragon's semantics on the arguments joined by spaces: every capture
    group of every match is hidden; what it covered of each argument becomes
    `*****` in that argument."""
    joined = " ".join(argv)
    hidden: list[tuple[int, int]] = []
    for pattern in rule.redact:
        for match in pattern.finditer(joined):
            for group in range(1, pattern.groups + 1):
                start, end = match.span(group)
                if start >= 0 and end > start:
                    hidden.append((start, end))
    if not hidden:
        return argv
    out = []
    offset = 0
    for arg in argv:
        start, end = offset, offset + len(arg)
        out.append(_hide(arg, [(max(a, start) - start, min(b, end) - start) for a, b in hidden
                               if a < end and b > start]))
        offset = end + 1
    return tuple(out)


def _hide(arg: str, pieces: Iterable[tuple[int, int]]) -> str:
    """`arg` with each piece (merged where they touch) replaced by `*****`."""
    merged: list[list[int]] = []
    for a, b in sorted(pieces):
        if merged and a <= merged[-1][1]:
            merged[-1][1] = max(merged[-1][1], b)
        else:
            merged.append([a, b])
    result, cursor = [], 0
    for a, b in merged:
        result += [arg[cursor:a], REDACTED]
        cursor = b
    result.append(arg[cursor:])
    return "".join(result)
