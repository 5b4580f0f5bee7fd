"""Secrets in command lines: argv redaction (tracer.redaction) before
anything leaves the process, on exec events (events.sanitize), on CRI
messages (cri.redact), and through the CLI's options."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

from exporters.jaeger_json import document
from tracer.app.cli import main
from tracer.cri import api_pb2
from tracer.cri.redact import redact
from tracer.events import (
    EXEC_FLAG_ENV_CAPTURED,
    EventType,
    ExecEvent,
    Header,
    Namespaces,
    decode,
    encode_exec,
    sanitize,
)
from tracer.pipeline.pipeline import replay
from tracer.pipeline.recording import RecordKind, read_recording
from tracer.redaction import (
    DEFAULT_REDACTION,
    REDACTED,
    ArgvRedaction,
    FilterError,
    default_redact,
    parse_filters,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


@pytest.mark.parametrize("argv, expected", [
    (["app", "--password=hunter2", "--user", "bob"], ["app", "--password=*****", "--user", "bob"]),
    (["app", "--password", "hunter2", "-v"], ["app", "--password", "*****", "-v"]),
    (["app", "-passwd", "x", "--api-key", "y", "--apikey=z", "--token=t", "--auth-token", "u"],
     ["app", "-passwd", "*****", "--api-key", "*****", "--apikey=*****", "--token=*****", "--auth-token", "*****"]),
    (["app", "--client-secret", "s", "--credentials=c", "--private-key=k", "--access-key", "a"],
     ["app", "--client-secret", "*****", "--credentials=*****", "--private-key=*****", "--access-key", "*****"]),
    # a value with blanks in one argument, environment-style assignments
    (["env", "DB_PASSWORD=a b c", "MODE=fast", "app"], ["env", "DB_PASSWORD=*****", "MODE=fast", "app"]),
    # a header, inline JSON, a URL with a password, AWS keys
    (["curl", "-H", "Authorization: Bearer abc.def", "https://u:pa55@db.example.com:5432/x"],
     ["curl", "-H", "Authorization: *****", "https://u:*****@db.example.com:5432/x"]),
    (["app", '{"password": "p1", "user": "u"}'], ["app", '{"password": "*****", "user": "u"}']),
    (["aws", "AKIAIOSFODNN7EXAMPLE", "--aws-secret-access-key", "wJalrXUtnFEMI/K7MDENG"],
     ["aws", "*****", "--aws-secret-access-key", "*****"]),
    # inside a shell command: the value up to the next blank, quote or separator
    (["sh", "-c", "export DB_PASSWORD=abc; app --token=t1 --secret 'a b' && curl -H 'X-Api-Key: k1' "
                  "redis://:rpw@cache"],
     ["sh", "-c", "export DB_PASSWORD=*****; app --token=***** --secret '*****' && curl -H 'X-Api-Key: *****' "
                  "redis://:*****@cache"]),
    # nothing credential-like: unchanged
    (["app", "--config=/etc/app.conf", "--name", "web", "https://example.com:443/login?next=/", "key.pem"],
     ["app", "--config=/etc/app.conf", "--name", "web", "https://example.com:443/login?next=/", "key.pem"]),
])
def test_default_rules(argv, expected):
    assert list(default_redact(argv)) == expected
    assert default_redact(expected) == tuple(expected)  # idempotent


def test_the_runtimes_own_argv_is_never_touched():
    """The roles and the ownership of processes are read from the argv of
    runc, the shim and the CNI plugins: every one of them in the committed
    recordings passes the default rules unchanged."""
    seen = 0
    for path in sorted(FIXTURES.glob("*.rec")):
        for record in read_recording(str(path)).records:
            if record.kind is RecordKind.KERNEL and record.payload[0] in (EventType.EXEC, EventType.PROC_SNAPSHOT):
                event = decode(record.payload)
                if event.argv and event.argv[0].rsplit("/", 1)[-1] in ("runc", "containerd-shim-runc-v2",
                                                                       "containerd", "bridge", "host-local"):
                    assert DEFAULT_REDACTION.redact(event.filename, event.argv) == event.argv
                    seen += 1
    assert seen > 500


def test_tetragons_examples():
    """docs/content/en/docs/concepts/events.md of Tetragon, "Redacting Sensitive Information"."""
    filters = parse_filters('{"redact": ["--password(?:\\\\s+|=)(\\\\S*)"]}\n'
                            '{"binary_regex": ["(?:^|/)foo$"], "redact": ["-p(?:\\\\s+|=)(\\\\S*)"]}')
    policy = ArgvRedaction(filters)
    assert policy.redact("/usr/bin/mysql", ["mysql", "--password", "abc"]) == ("mysql", "--password", REDACTED)
    assert policy.redact("/opt/foo", ["foo", "-p", "abc", "-q", "x"]) == ("foo", "-p", REDACTED, "-q", "x")
    assert policy.redact("/opt/bar", ["bar", "-p", "abc"]) == ("bar", "-p", "abc")  # not this binary


def test_a_user_filter_hides_what_its_groups_cover_in_each_argument():
    policy = ArgvRedaction(parse_filters(r'{"redact": ["pin=(\\d+)", "(sk_live_\\w+)"]}'))
    assert policy.redact("/app", ["app", "pin=1234", "x sk_live_abc y"]) == ("app", "pin=*****", "x ***** y")
    # a group across two arguments hides its piece of each; the count stays
    assert ArgvRedaction(parse_filters(r'{"redact": ["--key (\\S+ \\S+)"]}')).redact(
        "/app", ["app", "--key", "a", "b", "c"]) == ("app", "--key", REDACTED, REDACTED, "c")


@pytest.mark.parametrize("text, error", [
    ("{", "not JSON"), ('{"redact": ["("]}', "redact '('"), ('{"redact": []}', "at least one"),
    ('{"match": ["x"]}', "unknown field"), ('["x"]', "JSON object"), ('{"redact": [1]}', "list of regular"),
])
def test_bad_filters_are_refused_with_a_reason(text, error):
    with pytest.raises(FilterError, match=re.escape(error)):
        parse_filters(text)


def test_drop_args_keeps_the_program_and_the_runtimes_arguments():
    policy = ArgvRedaction(drop_args=True)
    assert policy.redact("/bin/sleep", ["sleep", "3600"]) == ("sleep",)
    runc = ["runc", "--root", "/run/containerd/runc/k8s.io", "start", "abc"]
    assert policy.redact("/usr/sbin/runc", runc) == tuple(runc)
    assert policy.redact("/usr/lib/cni/bridge", ["/usr/lib/cni/bridge"]) == ("/usr/lib/cni/bridge",)


SECRET = st.text("abcdefghijklmnopqrstuvwxyz0123456789!#%+,./:=@^_~", min_size=6, max_size=24).map(lambda s: "Zq" + s)
WORD = st.text("abcdefghijklmnopqrstuvwxyz-/.", min_size=1, max_size=12)
KEY = st.sampled_from(["password", "passwd", "db-password", "client_secret", "token", "api-key", "apikey", "auth",
                       "x-auth-token", "credential", "private-key", "access_key", "AWS_SECRET_ACCESS_KEY"])
FORMS = ["--{k}={s}", "{k}={s}", "-{k}={s}", "{k}: {s}", "--{k} {s}", "scheme://user:{s}@host", '{{"{k}": "{s}"}}']


@settings(max_examples=300, deadline=None)
@given(st.lists(WORD, max_size=4), KEY, SECRET, st.sampled_from(FORMS), st.lists(WORD, max_size=4),
       st.booleans())
def test_a_planted_secret_never_survives(before, key, secret, form, after, in_a_shell):
    if form.startswith("scheme://"):  # a URL's userinfo holds neither / nor @ (RFC 3986)
        secret = secret.replace("/", "").replace("@", "") + "x"
    secret = secret.replace('"', "")
    planted = form.format(k=key, s=secret)
    if in_a_shell:  # one argument: a shell's command
        argv = ["sh", "-c", " ".join([*before, planted, *after])]
    else:
        pieces = planted.split(" ", 1) if form == "--{k} {s}" else [planted]
        argv = ["app", *before, *pieces, *after]
    out = DEFAULT_REDACTION.redact("/bin/" + argv[0], argv)
    assert secret not in " ".join(out), (argv, out)
    assert len(out) == len(argv)


def _exec_event(argv, etype=EventType.EXEC, env=None):
    header = Header(type=etype, size=0, cpu=0, ktime_ns=1, pid=7, tgid=7, ppid=1, start_ns=1, parent_start_ns=1,
                    cgroup_id=1, cgroup_v1_id=1, ns=Namespaces(1, 2, 3, 4, 5, 6), comm="app")
    return ExecEvent(header, 7, "/bin/app", tuple(argv), env or {}, EXEC_FLAG_ENV_CAPTURED if env else 0)


@pytest.mark.parametrize("etype", [EventType.EXEC, EventType.PROC_SNAPSHOT])
def test_sanitize_redacts_execs_and_processes_found_running(etype):
    raw = encode_exec(_exec_event(["app", "--password", "hunter2-canary"], etype))
    assert b"hunter2-canary" in raw
    clean = sanitize(raw)
    assert b"hunter2-canary" not in clean
    assert decode(clean).argv == ("app", "--password", REDACTED)
    assert sanitize(clean) == clean  # idempotent: a replay leaves a recording's events as they are
    plain = encode_exec(_exec_event(["app", "--name", "web"], etype))
    assert sanitize(plain) is plain
    dropped = sanitize(raw, ArgvRedaction(drop_args=True))
    assert decode(dropped).argv == ("app",)


def test_sanitize_still_filters_the_environment_when_argv_is_clean():
    raw = encode_exec(_exec_event(["/usr/lib/cni/bridge"], env={"CNI_COMMAND": "ADD", "AWS_KEY": "k9"}))
    assert decode(sanitize(raw)).env == {"CNI_COMMAND": "ADD"}


def test_cri_command_lines_are_redacted_as_one_argv():
    config = api_pb2.ContainerConfig(command=["app", "--token"], args=["tok-canary-1", "--name", "web"])
    out = redact(api_pb2.CreateContainerRequest(pod_sandbox_id="s", config=config))
    assert out["config"]["command"] == ["app", "--token"]
    assert out["config"]["args"] == [REDACTED, "--name", "web"]
    # no command: the image's entrypoint gets the args
    only_args = redact(api_pb2.ContainerConfig(args=["--password", "pw-canary-2"]))
    assert only_args["args"] == ["--password", REDACTED]
    exec_sync = redact(api_pb2.ExecSyncRequest(container_id="c", cmd=["sh", "-c", "curl https://u:pw3@h"]))
    assert exec_sync["cmd"] == ["sh", "-c", "curl https://u:*****@h"]
    user = ArgvRedaction(parse_filters(r'{"redact": ["pin=(\\d+)"]}'), drop_args=True)
    assert redact(api_pb2.ExecRequest(cmd=["app", "pin=4321"]), user)["cmd"] == ["app"]
    assert "args" not in redact(api_pb2.ContainerConfig(command=["app"], args=["x"]), user)


def test_replays_with_args_dropped_differ_only_in_command_lines():
    """Dropping the arguments leaves the runtime's argv, so every trace of
    every recording is the same but for the container processes' command
    lines."""
    def without_command_lines(doc):
        for trace in doc["data"]:
            for span in trace["spans"]:
                span["tags"] = [t for t in span["tags"] if not t["key"].startswith("process.command")]
                for log in span["logs"]:
                    log["fields"] = [f for f in log["fields"] if not f["key"].startswith("process.command")]
        return doc

    for name in ("one-pod", "failed-starts", "reuse"):
        path = str(FIXTURES / f"{name}.rec")
        plain = document(replay(path).traces())
        dropped = document(replay(path, argv_redaction=ArgvRedaction(drop_args=True)).traces())
        assert plain != dropped
        assert without_command_lines(plain) == without_command_lines(dropped)


def test_the_cli_takes_filters_from_options_and_the_environment():
    runner = CliRunner()
    result = runner.invoke(main, ["daemon", "--no-otlp", "--print-config", "--drop-args",
                                  "--redaction-filters", '{"redact": ["-p (\\\\S+)"]}'])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["argv_redaction"] == {
        "default_rules": True, "drop_args": True, "filters": [{"redact": ["-p (\\S+)"], "binary_regex": []}]}
    env = {"TRACER_REDACTION_FILTERS": '{"redact": ["a (b)"]}\n{"redact": "(c d)", "binary_regex": ["x$"]}'}
    result = runner.invoke(main, ["daemon", "--no-otlp", "--print-config"], env=env)
    assert [f["redact"] for f in json.loads(result.output)["argv_redaction"]["filters"]] == [["a (b)"], ["(c d)"]]
    result = runner.invoke(main, ["daemon", "--no-otlp", "--print-config", "--redaction-filters", "{oops"])
    assert result.exit_code == 2 and "--redaction-filters" in result.output
