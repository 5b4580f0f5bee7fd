"""Pure: who is who, from the argv the runtime really uses."""

from tracer.correlate.processes import Exec
from tracer.correlate.roles import is_runc_init, parse_cni, parse_runc, parse_shim
from tracer.kernel.sockets import normalize_socket_path, path_variants


def exec_of(*argv, filename=None, env=None):
    return Exec(0, filename or argv[0], tuple(argv), env or {}, False)


def test_runc_create_as_the_shim_runs_it():
    call = parse_runc(exec_of("/usr/sbin/runc", "--root", "/run/containerd/runc/k8s.io", "--log",
                              "/b/log.json", "--log-format", "json", "create", "--bundle", "/b",
                              "--pid-file", "/b/init.pid", "0123abcd"))
    assert (call.subcommand, call.container_id, call.bundle) == ("create", "0123abcd", "/b")


def test_runc_start_and_flag_forms():
    assert parse_runc(exec_of("runc", "--root=/r", "start", "abc")).container_id == "abc"
    assert parse_runc(exec_of("runc", "create", "-b", "/x", "id1")).bundle == "/x"
    assert parse_runc(exec_of("runc", "--root", "/r")) is None
    assert parse_runc(exec_of("/bin/sh", "create", "x")) is None


def test_runc_init_is_recognised_from_its_argv():
    assert is_runc_init(exec_of("runc", "init", filename="/proc/self/exe"))
    assert not is_runc_init(exec_of("runc", "start", "x"))


def test_shim_start_daemon_and_delete():
    start = parse_shim(exec_of("/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-address",
                               "/run/containerd/containerd.sock", "-publish-binary", "/usr/bin/containerd",
                               "-id", "sb1", "start"))
    assert (start.action, start.container_id, start.namespace) == ("start", "sb1", "k8s.io")
    daemon = parse_shim(exec_of("/usr/bin/containerd-shim-runc-v2", "-namespace", "k8s.io", "-id", "sb1",
                                "-address", "/run/containerd/containerd.sock"))
    assert daemon.action == "daemon"
    assert parse_shim(exec_of("containerd-shim-runc-v2", "-id", "c1", "delete")).action == "delete"
    assert parse_shim(exec_of("containerd-shim-runc-v2", "start")) is None  # no id


def test_cni_plugin_from_its_environment():
    call = parse_cni(exec_of("/usr/lib/cni/bridge", env={"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "sb1",
                                                          "CNI_IFNAME": "eth0", "CNI_NETNS": "/n"}))
    assert (call.plugin, call.command, call.container_id, call.ifname) == ("bridge", "ADD", "sb1", "eth0")
    assert parse_cni(exec_of("/usr/lib/cni/bridge")) is None


def test_socket_paths_are_normalised_as_grpc_core_spells_them():
    assert normalize_socket_path("unix:///run/containerd/containerd.sock") == "/run/containerd/containerd.sock"
    assert normalize_socket_path("///run/x.sock") == "/run/x.sock"
    assert path_variants("/run/x.sock") == ["/run/x.sock", "/var/run/x.sock"]
    assert path_variants("/var/run/crio/crio.sock") == ["/var/run/crio/crio.sock", "/run/crio/crio.sock"]
