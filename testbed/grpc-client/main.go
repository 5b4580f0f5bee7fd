// cri-client: a long-lived grpc-go CRI client that talks to a container
// runtime the way kubelet v1.28 does, for the tracer's tests.
//
// It keeps one HTTP/2 connection open for its whole life (two with
// -image-conn=separate, as kubelet really has), polls like kubelet's PLEG,
// runtime-health check, stats and log managers, and starts and stops pods on
// command. Commands come on stdin, one JSON object a line:
//
//	{"op":"start","name":"web","namespace":"default","uid":"...","image":"localhost/busybox:1",
//	 "command":["sh","-c","sleep 3600"],"log_dir":"/var/log/pods","cgroup_parent":"..."}
//	{"op":"stop","name":"web","namespace":"default"}
//	{"op":"quit"}
//
// After each start or stop it prints one JSON result line on stdout. Every
// CRI call it makes, polling included, is written as one JSON line to the
// -log file, with its start and end on CLOCK_MONOTONIC (the clock of
// bpf_ktime_get_ns).
package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"flag"
	"fmt"
	"hash/crc32"
	"io"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	pb "crigrpcclient/runtimev1"
)

// Labels kubelet sets on every sandbox and container (pkg/kubelet/types).
const (
	labelPodName       = "io.kubernetes.pod.name"
	labelPodNamespace  = "io.kubernetes.pod.namespace"
	labelPodUID        = "io.kubernetes.pod.uid"
	labelContainerName = "io.kubernetes.container.name"

	// kubelet's remote runtime client (pkg/kubelet/cri/remote in v1.28).
	maxMsgSize           = 16 * 1024 * 1024
	minConnectionTimeout = 5 * time.Second
	baseBackoffDelay     = 100 * time.Millisecond
	maxBackoffDelay      = 3 * time.Second

	// kuberuntime's kubeRuntimeAPIVersion, sent in its own Version call.
	kubeRuntimeAPIVersion = "0.1.0"

	// A best-effort container: the minimum CPU shares, the highest OOM score.
	bestEffortCPUShares    = 2
	bestEffortOOMScoreAdj  = 1000
	defaultGracePeriodSecs = 2
)

// What kubelet asks for by default (ProcMount "Default").
var (
	defaultMaskedPaths = []string{
		"/proc/asound", "/proc/acpi", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
		"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
		"/sys/firmware", "/sys/devices/virtual/powercap",
	}
	defaultReadonlyPaths = []string{"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"}
)

// ------------------------------------------------------------------ clock

// monotonicNow is CLOCK_MONOTONIC in nanoseconds: the kernel's ktime, as
// bpf_ktime_get_ns() returns it.
func monotonicNow() int64 {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		panic(err)
	}
	return ts.Nano()
}

// -------------------------------------------------------------- call log

// callRecord is one CRI call as this client made it (one JSON line in -log).
type callRecord struct {
	Method    string `json:"method"` // full gRPC path, "/runtime.v1.RuntimeService/Version"
	Start     int64  `json:"start"`  // CLOCK_MONOTONIC ns, just before the call
	End       int64  `json:"end"`    // CLOCK_MONOTONIC ns, when it returned
	WallStart int64  `json:"wall_start"`
	Code      string `json:"code"` // gRPC status code name: "OK", "NotFound", ...
	Error     string `json:"error,omitempty"`
	Pod       string `json:"pod,omitempty"` // "namespace/name" when the call is about one pod
	Source    string `json:"source"`        // startup, pleg, health, stats, logs, images, start, stop
	Deadline  bool   `json:"deadline"`      // whether the call carried a grpc-timeout
}

type callLog struct {
	mu  sync.Mutex
	out io.Writer
}

func (l *callLog) write(record callRecord) {
	line, _ := json.Marshal(record)
	line = append(line, '\n')
	l.mu.Lock()
	defer l.mu.Unlock()
	_, _ = l.out.Write(line)
}

// callInfo rides in the context from the caller to the interceptor.
type callInfo struct {
	pod    string
	source string
	sink   func(callRecord) // also handed the record, e.g. for a start's result
}

type callInfoKey struct{}

func withCall(ctx context.Context, info callInfo) context.Context {
	return context.WithValue(ctx, callInfoKey{}, info)
}

// -------------------------------------------------------------- client

type client struct {
	runtime    pb.RuntimeServiceClient
	images     pb.ImageServiceClient
	conns      []*grpc.ClientConn
	timeout    time.Duration // kubelet's --runtime-request-timeout
	log        *callLog
	traceparen bool
}

func (c *client) interceptor(ctx context.Context, method string, req, reply interface{},
	cc *grpc.ClientConn, invoker grpc.UnaryInvoker, opts ...grpc.CallOption) error {
	info, _ := ctx.Value(callInfoKey{}).(callInfo)
	if c.traceparen {
		// kubelet with tracing on: a span of its own per call, so a new
		// traceparent value each time.
		ctx = metadata.AppendToOutgoingContext(ctx, "traceparent", newTraceparent())
	}
	_, hasDeadline := ctx.Deadline()
	wall := time.Now().UnixNano()
	start := monotonicNow()
	err := invoker(ctx, method, req, reply, cc, opts...)
	end := monotonicNow()
	record := callRecord{Method: method, Start: start, End: end, WallStart: wall,
		Code: status.Code(err).String(), Pod: info.pod, Source: info.source, Deadline: hasDeadline}
	if err != nil {
		record.Error = status.Convert(err).Message()
	}
	c.log.write(record)
	if info.sink != nil {
		info.sink(record)
	}
	return err
}

func newTraceparent() string {
	var ids [24]byte
	_, _ = rand.Read(ids[:])
	return fmt.Sprintf("00-%x-%x-01", ids[:16], ids[16:])
}

// dial opens a connection as kubelet's NewRemoteRuntimeService does: the
// socket path as the target, its own unix dialer, no TLS, 16 MiB messages,
// no keepalive pings.
func (c *client) dial(socket string) (*grpc.ClientConn, error) {
	dialer := func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "unix", addr)
	}
	params := grpc.ConnectParams{Backoff: backoff.DefaultConfig, MinConnectTimeout: minConnectionTimeout}
	params.Backoff.BaseDelay = baseBackoffDelay
	params.Backoff.MaxDelay = maxBackoffDelay
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	return grpc.DialContext(ctx, socket,
		grpc.WithInsecure(),
		grpc.WithContextDialer(dialer),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(maxMsgSize)),
		grpc.WithUnaryInterceptor(c.interceptor),
		grpc.WithConnectParams(params))
}

func (c *client) close() {
	for _, conn := range c.conns {
		_ = conn.Close()
	}
}

// Contexts as kubelet's remote runtime client builds them: most calls get
// the runtime request timeout, a few none at all.
func (c *client) ctxTimeout(info callInfo, timeout time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(withCall(context.Background(), info), timeout)
}

func (c *client) ctxNoTimeout(info callInfo) (context.Context, context.CancelFunc) {
	return context.WithCancel(withCall(context.Background(), info))
}

func (c *client) version(info callInfo, apiVersion string) (*pb.VersionResponse, error) {
	ctx, cancel := c.ctxTimeout(info, c.timeout)
	defer cancel()
	return c.runtime.Version(ctx, &pb.VersionRequest{Version: apiVersion})
}

func (c *client) status(info callInfo) (*pb.StatusResponse, error) {
	ctx, cancel := c.ctxTimeout(info, c.timeout)
	defer cancel()
	return c.runtime.Status(ctx, &pb.StatusRequest{Verbose: false})
}

// imageFsInfo: kubelet sets no timeout ("ImageFsInfo takes time"), except
// for the call that validates the connection at start-up.
func (c *client) imageFsInfo(info callInfo, withTimeout bool) (*pb.ImageFsInfoResponse, error) {
	ctx, cancel := c.ctxNoTimeout(info)
	if withTimeout {
		ctx, cancel = c.ctxTimeout(info, c.timeout)
	}
	defer cancel()
	return c.images.ImageFsInfo(ctx, &pb.ImageFsInfoRequest{})
}

func (c *client) listPodSandbox(info callInfo, filter *pb.PodSandboxFilter) (*pb.ListPodSandboxResponse, error) {
	ctx, cancel := c.ctxTimeout(info, c.timeout)
	defer cancel()
	return c.runtime.ListPodSandbox(ctx, &pb.ListPodSandboxRequest{Filter: filter})
}

func (c *client) listContainers(info callInfo, filter *pb.ContainerFilter) (*pb.ListContainersResponse, error) {
	ctx, cancel := c.ctxTimeout(info, c.timeout)
	defer cancel()
	return c.runtime.ListContainers(ctx, &pb.ListContainersRequest{Filter: filter})
}

func (c *client) podSandboxStatus(info callInfo, id string) (*pb.PodSandboxStatusResponse, error) {
	ctx, cancel := c.ctxTimeout(info, c.timeout)
	defer cancel()
	return c.runtime.PodSandboxStatus(ctx, &pb.PodSandboxStatusRequest{PodSandboxId: id, Verbose: false})
}

func (c *client) containerStatus(info callInfo, id string) (*pb.ContainerStatusResponse, error) {
	ctx, cancel := c.ctxTimeout(info, c.timeout)
	defer cancel()
	return c.runtime.ContainerStatus(ctx, &pb.ContainerStatusRequest{ContainerId: id, Verbose: false})
}

// listContainerStats: no timeout in kubelet ("writable layer stats
// collection takes time").
func (c *client) listContainerStats(info callInfo) (*pb.ListContainerStatsResponse, error) {
	ctx, cancel := c.ctxNoTimeout(info)
	defer cancel()
	return c.runtime.ListContainerStats(ctx, &pb.ListContainerStatsRequest{Filter: &pb.ContainerStatsFilter{}})
}

func (c *client) listPodSandboxStats(info callInfo) (*pb.ListPodSandboxStatsResponse, error) {
	ctx, cancel := c.ctxTimeout(info, c.timeout)
	defer cancel()
	return c.runtime.ListPodSandboxStats(ctx, &pb.ListPodSandboxStatsRequest{Filter: &pb.PodSandboxStatsFilter{}})
}

func (c *client) listImages(info callInfo) (*pb.ListImagesResponse, error) {
	ctx, cancel := c.ctxTimeout(info, c.timeout)
	defer cancel()
	return c.images.ListImages(ctx, &pb.ListImagesRequest{Filter: nil})
}

// ---------------------------------------------------------- pod commands

// command is one line of stdin.
type command struct {
	Op           string            `json:"op"`
	Name         string            `json:"name"`
	Namespace    string            `json:"namespace"`
	UID          string            `json:"uid"`
	Image        string            `json:"image"`
	Command      []string          `json:"command"`
	Args         []string          `json:"args"`
	Env          map[string]string `json:"env"`
	Labels       map[string]string `json:"labels"`
	Sysctls      map[string]string `json:"sysctls"`
	Ports        []portSpec        `json:"ports"`
	HostNetwork  bool              `json:"host_network"`
	Container    string            `json:"container_name"`
	SandboxImage string            `json:"sandbox_image"` // accepted; the runtime's config names the pause image
	LogDir       string            `json:"log_dir"`       // the pods' log root (kubelet's /var/log/pods)
	CgroupParent string            `json:"cgroup_parent"`
	MemoryLimit  int64             `json:"memory_limit_bytes"`
	GracePeriod  *int64            `json:"grace_period_s"`
	PullPolicy   string            `json:"image_pull_policy"` // IfNotPresent (default) or Never
	SandboxID    string            `json:"sandbox_id"`        // stop: overrides the remembered pod
	ContainerID  string            `json:"container_id"`
}

type portSpec struct {
	ContainerPort int32  `json:"container_port"`
	HostPort      int32  `json:"host_port"`
	HostIP        string `json:"host_ip"`
	Protocol      string `json:"protocol"`
}

// result is one line of stdout, after each start or stop.
type result struct {
	Op          string       `json:"op"`
	Name        string       `json:"name"`
	Namespace   string       `json:"namespace"`
	UID         string       `json:"uid,omitempty"`
	SandboxID   string       `json:"sandbox_id,omitempty"`
	ContainerID string       `json:"container_id,omitempty"`
	ImageRef    string       `json:"image_ref,omitempty"`
	Start       int64        `json:"start"` // CLOCK_MONOTONIC ns of the first call's start
	End         int64        `json:"end"`   // and of the last call's end
	Calls       []callRecord `json:"calls"`
	Error       string       `json:"error,omitempty"`
}

// startedPod is what the client remembers of a pod it started, as kubelet
// keeps its sandbox config for later calls.
type startedPod struct {
	sandboxID   string
	containerID string
	grace       int64
}

type node struct {
	cli           *client
	logRoot       string
	cgroupParent  string
	resolvConf    string
	defaultImage  string
	mu            sync.Mutex
	pods          map[string]*startedPod // by "namespace/name"
	stdout        *json.Encoder
	stdoutMu      sync.Mutex
	workers       map[string]chan command // one pod worker per pod, as kubelet's
	workersWG     sync.WaitGroup
	stopRequested bool
}

func (n *node) emit(r result) {
	n.stdoutMu.Lock()
	defer n.stdoutMu.Unlock()
	_ = n.stdout.Encode(r)
}

// dispatch hands a command to its pod's worker, so that one pod's commands
// run in order and different pods' commands run at the same time.
func (n *node) dispatch(cmd command) {
	key := cmd.Namespace + "/" + cmd.Name
	n.mu.Lock()
	queue, ok := n.workers[key]
	if !ok {
		queue = make(chan command, 64)
		n.workers[key] = queue
		n.workersWG.Add(1)
		go func() {
			defer n.workersWG.Done()
			for c := range queue {
				n.emit(n.run(c))
			}
		}()
	}
	n.mu.Unlock()
	queue <- cmd
}

// drain waits for every queued command to finish.
func (n *node) drain() {
	n.mu.Lock()
	for _, queue := range n.workers {
		close(queue)
	}
	n.workers = map[string]chan command{}
	n.mu.Unlock()
	n.workersWG.Wait()
}

func (n *node) run(cmd command) result {
	switch cmd.Op {
	case "start":
		return n.startPod(cmd)
	case "stop":
		return n.stopPod(cmd)
	}
	return result{Op: cmd.Op, Name: cmd.Name, Namespace: cmd.Namespace, Error: "unknown op " + strconv.Quote(cmd.Op)}
}

// collector gathers the records of one command's calls.
type collector struct {
	mu    sync.Mutex
	calls []callRecord
}

func (c *collector) add(r callRecord) {
	c.mu.Lock()
	c.calls = append(c.calls, r)
	c.mu.Unlock()
}

func (c *collector) fill(r *result) {
	c.mu.Lock()
	defer c.mu.Unlock()
	r.Calls = append([]callRecord{}, c.calls...)
	if len(c.calls) > 0 {
		r.Start = c.calls[0].Start
		r.End = c.calls[len(c.calls)-1].End
	}
}

func newUID() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	b[6] = (b[6] & 0x0f) | 0x40
	b[8] = (b[8] & 0x3f) | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}

func (n *node) podLabels(cmd command) map[string]string {
	labels := map[string]string{}
	for k, v := range cmd.Labels {
		labels[k] = v
	}
	labels[labelPodName] = cmd.Name
	labels[labelPodNamespace] = cmd.Namespace
	labels[labelPodUID] = cmd.UID
	return labels
}

func namespaceOptions(cmd command) *pb.NamespaceOption {
	network := pb.NamespaceMode_POD
	if cmd.HostNetwork {
		network = pb.NamespaceMode_NODE
	}
	// PID per container (kubelet's default for v1 pods), IPC shared by the pod.
	return &pb.NamespaceOption{Network: network, Pid: pb.NamespaceMode_CONTAINER, Ipc: pb.NamespaceMode_POD}
}

func unconfined() *pb.SecurityProfile {
	return &pb.SecurityProfile{ProfileType: pb.SecurityProfile_Unconfined}
}

// dnsConfig is what kubelet sends for a pod whose ClusterFirst policy falls
// back to the node's resolver (no cluster DNS configured): the node's
// resolv.conf, limited as kubelet limits it.
func dnsConfig(resolvConf string) *pb.DNSConfig {
	config := &pb.DNSConfig{}
	if resolvConf == "" {
		return config
	}
	data, err := os.ReadFile(resolvConf)
	if err != nil {
		return config
	}
	for _, line := range strings.Split(string(data), "\n") {
		if i := strings.IndexAny(line, "#;"); i >= 0 {
			line = line[:i]
		}
		fields := strings.Fields(line)
		if len(fields) < 2 {
			continue
		}
		switch fields[0] {
		case "nameserver":
			if len(config.Servers) < 3 {
				config.Servers = append(config.Servers, fields[1])
			}
		case "search":
			config.Searches = fields[1:]
		case "options":
			config.Options = fields[1:]
		}
	}
	if len(config.Searches) > 32 {
		config.Searches = config.Searches[:32]
	}
	return config
}

func protocol(name string) pb.Protocol {
	switch strings.ToUpper(name) {
	case "UDP":
		return pb.Protocol_UDP
	case "SCTP":
		return pb.Protocol_SCTP
	}
	return pb.Protocol_TCP
}

// sandboxConfig is the PodSandboxConfig kubelet (kuberuntime,
// generatePodSandboxConfig) builds for a best-effort pod; it mirrors
// testbed/tracer_testbed/pods.py, plus the DNS config, port mappings and sandbox
// resources kubelet adds.
func (n *node) sandboxConfig(cmd command, logDir string) *pb.PodSandboxConfig {
	hostname := cmd.Name
	if cmd.HostNetwork {
		hostname = "" // runc refuses a hostname without a private UTS namespace
	}
	cgroupParent := cmd.CgroupParent
	if cgroupParent == "" {
		cgroupParent = strings.TrimRight(n.cgroupParent, "/") + "/pod" + cmd.UID
	}
	sysctls := map[string]string{}
	for k, v := range cmd.Sysctls {
		sysctls[k] = v
	}
	config := &pb.PodSandboxConfig{
		Metadata:     &pb.PodSandboxMetadata{Name: cmd.Name, Uid: cmd.UID, Namespace: cmd.Namespace, Attempt: 0},
		Hostname:     hostname,
		LogDirectory: logDir,
		DnsConfig:    dnsConfig(n.resolvConf),
		Labels:       n.podLabels(cmd),
		Annotations: map[string]string{
			"kubernetes.io/config.seen":   time.Now().Format(time.RFC3339Nano),
			"kubernetes.io/config.source": "api",
		},
		Linux: &pb.LinuxPodSandboxConfig{
			CgroupParent: cgroupParent,
			SecurityContext: &pb.LinuxSandboxSecurityContext{
				NamespaceOptions: namespaceOptions(cmd),
				Seccomp:          unconfined(),
			},
			Sysctls:   sysctls,
			Resources: &pb.LinuxContainerResources{CpuShares: bestEffortCPUShares, MemoryLimitInBytes: cmd.MemoryLimit},
		},
	}
	for _, port := range cmd.Ports {
		config.PortMappings = append(config.PortMappings, &pb.PortMapping{
			Protocol: protocol(port.Protocol), ContainerPort: port.ContainerPort,
			HostPort: port.HostPort, HostIp: port.HostIP})
	}
	return config
}

func containerHash(cmd command) string {
	keys := make([]string, 0, len(cmd.Env))
	for k := range cmd.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	desc := fmt.Sprintf("%s|%s|%q|%q|%q", cmd.Container, cmd.Image, cmd.Command, cmd.Args, keys)
	return strconv.FormatUint(uint64(crc32.ChecksumIEEE([]byte(desc))), 16)
}

// containerConfig is the ContainerConfig kubelet builds for the app
// container (mirrors testbed/tracer_testbed/pods.py's container_config).
func (n *node) containerConfig(cmd command, imageRef string, grace int64) *pb.ContainerConfig {
	keys := make([]string, 0, len(cmd.Env))
	for k := range cmd.Env {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	envs := make([]*pb.KeyValue, 0, len(keys))
	for _, k := range keys {
		envs = append(envs, &pb.KeyValue{Key: k, Value: []byte(cmd.Env[k])})
	}
	return &pb.ContainerConfig{
		Metadata: &pb.ContainerMetadata{Name: cmd.Container, Attempt: 0},
		Image:    &pb.ImageSpec{Image: imageRef, UserSpecifiedImage: cmd.Image},
		Command:  cmd.Command,
		Args:     cmd.Args,
		Envs:     envs,
		Labels: map[string]string{
			labelContainerName: cmd.Container,
			labelPodName:       cmd.Name,
			labelPodNamespace:  cmd.Namespace,
			labelPodUID:        cmd.UID,
		},
		Annotations: map[string]string{
			"io.kubernetes.container.hash":                     containerHash(cmd),
			"io.kubernetes.container.restartCount":             "0",
			"io.kubernetes.container.terminationMessagePath":   "/dev/termination-log",
			"io.kubernetes.container.terminationMessagePolicy": "File",
			"io.kubernetes.pod.terminationGracePeriod":         strconv.FormatInt(grace, 10),
		},
		LogPath: cmd.Container + "/0.log",
		Linux: &pb.LinuxContainerConfig{
			Resources: &pb.LinuxContainerResources{
				CpuShares: bestEffortCPUShares, OomScoreAdj: bestEffortOOMScoreAdj,
				MemoryLimitInBytes: cmd.MemoryLimit,
			},
			SecurityContext: &pb.LinuxContainerSecurityContext{
				NamespaceOptions: namespaceOptions(cmd),
				Seccomp:          unconfined(),
				MaskedPaths:      defaultMaskedPaths,
				ReadonlyPaths:    defaultReadonlyPaths,
			},
		},
	}
}

func (n *node) defaults(cmd *command) {
	if cmd.Namespace == "" {
		cmd.Namespace = "default"
	}
	if cmd.UID == "" {
		cmd.UID = newUID()
	}
	if cmd.Image == "" {
		cmd.Image = n.defaultImage
	}
	if cmd.Container == "" {
		cmd.Container = "app"
	}
}

// startPod runs kubelet's pod start: RunPodSandbox -> PodSandboxStatus ->
// ImageStatus [-> PullImage] -> CreateContainer -> StartContainer ->
// ContainerStatus.
func (n *node) startPod(cmd command) (res result) {
	n.defaults(&cmd)
	podKey := cmd.Namespace + "/" + cmd.Name
	res = result{Op: "start", Name: cmd.Name, Namespace: cmd.Namespace, UID: cmd.UID}
	calls := &collector{}
	defer calls.fill(&res)
	info := callInfo{pod: podKey, source: "start", sink: calls.add}
	fail := func(step string, err error) result {
		res.Error = step + ": " + err.Error()
		return res
	}
	grace := int64(defaultGracePeriodSecs)
	if cmd.GracePeriod != nil {
		grace = *cmd.GracePeriod
	}

	logRoot := cmd.LogDir
	if logRoot == "" {
		logRoot = n.logRoot
	}
	logDir := filepath.Join(logRoot, cmd.Namespace+"_"+cmd.Name+"_"+cmd.UID)
	// kubelet creates the pod's log directory before RunPodSandbox.
	if err := os.MkdirAll(logDir, 0o755); err != nil {
		return fail("log directory", err)
	}
	config := n.sandboxConfig(cmd, logDir)

	// RunPodSandbox gets twice the request timeout (kubelet: "4 mins by default").
	ctx, cancel := n.cli.ctxTimeout(info, 2*n.cli.timeout)
	run, err := n.cli.runtime.RunPodSandbox(ctx, &pb.RunPodSandboxRequest{Config: config, RuntimeHandler: ""})
	cancel()
	if err != nil {
		return fail("RunPodSandbox", err)
	}
	res.SandboxID = run.PodSandboxId
	n.remember(podKey, &startedPod{sandboxID: run.PodSandboxId, grace: grace})

	if _, err := n.cli.podSandboxStatus(info, run.PodSandboxId); err != nil {
		return fail("PodSandboxStatus", err)
	}

	// kubelet's EnsureImageExists: ImageStatus, PullImage only when absent.
	imageSpec := &pb.ImageSpec{Image: cmd.Image, Annotations: config.Annotations}
	ctx, cancel = n.cli.ctxTimeout(info, n.cli.timeout)
	imageStatus, err := n.cli.images.ImageStatus(ctx, &pb.ImageStatusRequest{Image: imageSpec})
	cancel()
	if err != nil {
		return fail("ImageStatus", err)
	}
	imageRef := ""
	if imageStatus.Image != nil {
		imageRef = imageStatus.Image.Id
	}
	if imageRef == "" {
		if cmd.PullPolicy == "Never" {
			res.Error = fmt.Sprintf("ErrImageNeverPull: Container image %q is not present with pull policy of Never", cmd.Image)
			return res
		}
		ctx, cancel = n.cli.ctxNoTimeout(info) // kubelet: PullImage has no timeout
		pulled, err := n.cli.images.PullImage(ctx, &pb.PullImageRequest{Image: imageSpec, SandboxConfig: config})
		cancel()
		if err != nil {
			return fail("PullImage", err)
		}
		imageRef = pulled.ImageRef
	}
	res.ImageRef = imageRef

	ctx, cancel = n.cli.ctxTimeout(info, n.cli.timeout)
	created, err := n.cli.runtime.CreateContainer(ctx, &pb.CreateContainerRequest{
		PodSandboxId: run.PodSandboxId, Config: n.containerConfig(cmd, imageRef, grace), SandboxConfig: config})
	cancel()
	if err != nil {
		return fail("CreateContainer", err)
	}
	res.ContainerID = created.ContainerId
	n.remember(podKey, &startedPod{sandboxID: run.PodSandboxId, containerID: created.ContainerId, grace: grace})

	ctx, cancel = n.cli.ctxTimeout(info, n.cli.timeout)
	_, err = n.cli.runtime.StartContainer(ctx, &pb.StartContainerRequest{ContainerId: created.ContainerId})
	cancel()
	if err != nil {
		return fail("StartContainer", err)
	}
	if _, err := n.cli.containerStatus(info, created.ContainerId); err != nil {
		return fail("ContainerStatus", err)
	}
	return res
}

func (n *node) remember(key string, pod *startedPod) {
	n.mu.Lock()
	n.pods[key] = pod
	n.mu.Unlock()
}

// stopPod deletes a pod as kubelet does: killPod stops the containers, then
// the sandbox; the garbage collector removes the container, then the
// sandbox.
func (n *node) stopPod(cmd command) (res result) {
	if cmd.Namespace == "" {
		cmd.Namespace = "default"
	}
	podKey := cmd.Namespace + "/" + cmd.Name
	res = result{Op: "stop", Name: cmd.Name, Namespace: cmd.Namespace}
	calls := &collector{}
	defer calls.fill(&res)
	info := callInfo{pod: podKey, source: "stop", sink: calls.add}

	n.mu.Lock()
	pod := n.pods[podKey]
	n.mu.Unlock()
	if pod == nil {
		pod = &startedPod{grace: defaultGracePeriodSecs}
	}
	if cmd.SandboxID != "" {
		pod.sandboxID = cmd.SandboxID
	}
	if cmd.ContainerID != "" {
		pod.containerID = cmd.ContainerID
	}
	if cmd.GracePeriod != nil {
		pod.grace = *cmd.GracePeriod
	}
	if pod.sandboxID == "" {
		res.Error = "unknown pod " + podKey
		return res
	}
	res.SandboxID, res.ContainerID = pod.sandboxID, pod.containerID
	var errs []string
	if pod.containerID != "" {
		// The grace period on top of the request timeout, as kubelet does.
		ctx, cancel := n.cli.ctxTimeout(info, n.cli.timeout+time.Duration(pod.grace)*time.Second)
		_, err := n.cli.runtime.StopContainer(ctx, &pb.StopContainerRequest{ContainerId: pod.containerID, Timeout: pod.grace})
		cancel()
		if err != nil {
			errs = append(errs, "StopContainer: "+err.Error())
		}
	}
	ctx, cancel := n.cli.ctxTimeout(info, n.cli.timeout)
	_, err := n.cli.runtime.StopPodSandbox(ctx, &pb.StopPodSandboxRequest{PodSandboxId: pod.sandboxID})
	cancel()
	if err != nil {
		errs = append(errs, "StopPodSandbox: "+err.Error())
	}
	if pod.containerID != "" {
		ctx, cancel = n.cli.ctxTimeout(info, n.cli.timeout)
		_, err = n.cli.runtime.RemoveContainer(ctx, &pb.RemoveContainerRequest{ContainerId: pod.containerID})
		cancel()
		if err != nil {
			errs = append(errs, "RemoveContainer: "+err.Error())
		}
	}
	ctx, cancel = n.cli.ctxTimeout(info, n.cli.timeout)
	_, err = n.cli.runtime.RemovePodSandbox(ctx, &pb.RemovePodSandboxRequest{PodSandboxId: pod.sandboxID})
	cancel()
	if err != nil {
		errs = append(errs, "RemovePodSandbox: "+err.Error())
	}
	res.Error = strings.Join(errs, "; ")
	if res.Error == "" {
		n.mu.Lock()
		delete(n.pods, podKey)
		n.mu.Unlock()
	}
	return res
}

// ---------------------------------------------------------------- polling

// pleg is kubelet's generic PLEG: a relist every period, and the pod's
// status (GetPodStatus) for every pod whose sandboxes or containers changed.
type pleg struct {
	cli      *client
	previous map[string]map[string]int32 // pod uid -> sandbox/container id -> state
}

type podRef struct{ uid, name, namespace string }

func (p *pleg) relist() {
	info := callInfo{source: "pleg"}
	sandboxes, err := p.cli.listPodSandbox(info, nil) // all sandboxes: no filter at all
	if err != nil {
		return
	}
	// getKubeletContainers(all=true): an empty, non-nil filter.
	containers, err := p.cli.listContainers(info, &pb.ContainerFilter{})
	if err != nil {
		return
	}
	current := map[string]map[string]int32{}
	refs := map[string]podRef{}
	note := func(labels map[string]string, id string, state int32, prefix string) {
		uid := labels[labelPodUID]
		if uid == "" {
			return
		}
		if current[uid] == nil {
			current[uid] = map[string]int32{}
		}
		current[uid][prefix+id] = state
		if _, ok := refs[uid]; !ok || refs[uid].name == "" {
			refs[uid] = podRef{uid, labels[labelPodName], labels[labelPodNamespace]}
		}
	}
	for _, s := range sandboxes.Items {
		note(s.Labels, s.Id, int32(s.State), "s:")
	}
	for _, c := range containers.Containers {
		note(c.Labels, c.Id, int32(c.State), "c:")
	}
	uids := make([]string, 0, len(current))
	for uid := range current {
		uids = append(uids, uid)
	}
	sort.Strings(uids)
	for _, uid := range uids {
		if !sameStates(p.previous[uid], current[uid]) {
			p.podStatus(refs[uid])
		}
	}
	p.previous = current
}

func sameStates(a, b map[string]int32) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}

// podStatus is kuberuntime's GetPodStatus: the pod's sandboxes by its UID
// label, each sandbox's status, its containers by the same label, and each
// container's status (verbose=false throughout).
func (p *pleg) podStatus(ref podRef) {
	info := callInfo{pod: ref.namespace + "/" + ref.name, source: "pleg"}
	selector := map[string]string{labelPodUID: ref.uid}
	sandboxes, err := p.cli.listPodSandbox(info, &pb.PodSandboxFilter{LabelSelector: selector})
	if err != nil {
		return
	}
	// Newest first, as kubelet orders them.
	items := sandboxes.Items
	sort.Slice(items, func(i, j int) bool { return items[i].CreatedAt > items[j].CreatedAt })
	for _, s := range items {
		_, _ = p.cli.podSandboxStatus(info, s.Id)
	}
	containers, err := p.cli.listContainers(info, &pb.ContainerFilter{LabelSelector: selector})
	if err != nil {
		return
	}
	for _, c := range containers.Containers {
		_, _ = p.cli.containerStatus(info, c.Id)
	}
}

// statsCycle is what kubelet's eviction manager (summary API, CRI stats
// provider) and container log manager ask every 10 s.
func statsCycle(cli *client, sandboxStats bool) {
	info := callInfo{source: "stats"}
	_, _ = cli.imageFsInfo(info, false)
	_, _ = cli.listPodSandbox(info, &pb.PodSandboxFilter{})
	_, _ = cli.listContainers(info, &pb.ContainerFilter{})
	_, _ = cli.listContainerStats(info)
	if sandboxStats {
		_, _ = cli.listPodSandboxStats(info)
	}
	// Container log manager: every running container's status (log path).
	logs := callInfo{source: "logs"}
	containers, err := cli.listContainers(logs, &pb.ContainerFilter{})
	if err != nil {
		return
	}
	for _, c := range containers.Containers {
		if c.State == pb.ContainerState_CONTAINER_RUNNING {
			podKey := c.Labels[labelPodNamespace] + "/" + c.Labels[labelPodName]
			_, _ = cli.containerStatus(callInfo{pod: podKey, source: "logs"}, c.Id)
		}
	}
}

// every runs f, then waits period, until stop is closed (wait.Until's
// sliding period).
func every(period time.Duration, stop <-chan struct{}, wg *sync.WaitGroup, f func()) {
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			select {
			case <-stop:
				return
			default:
			}
			f()
			select {
			case <-stop:
				return
			case <-time.After(period):
			}
		}
	}()
}

// ------------------------------------------------------------------ comm

// renameThreads gives every thread of the process the command name `name`
// (threads made later inherit it from the thread that clones them).
func renameThreads(name string) {
	tasks, err := os.ReadDir("/proc/self/task")
	if err != nil {
		return
	}
	for _, task := range tasks {
		_ = os.WriteFile(filepath.Join("/proc/self/task", task.Name(), "comm"), []byte(name), 0)
	}
}

// ------------------------------------------------------------------ main

func main() {
	socket := flag.String("socket", "", "the CRI socket (containerd's), a path")
	logPath := flag.String("log", "", "file for the call log: one JSON line per CRI call")
	poll := flag.String("poll", "on", "kubelet's periodic calls: on or off")
	timeout := flag.Duration("timeout", 2*time.Minute, "kubelet's --runtime-request-timeout")
	logRoot := flag.String("log-root", "/var/log/pods", "pods' log root (kubelet's /var/log/pods)")
	cgroupParent := flag.String("pod-cgroup-parent", "/kubepods/besteffort",
		"cgroup under which a pod's cgroup pod<uid> goes (kubelet's cgroupfs driver, best-effort QoS)")
	resolvConf := flag.String("resolv-conf", "/etc/resolv.conf", "kubelet's --resolv-conf for pods' DNS config (\"\" for none)")
	image := flag.String("image", "localhost/busybox:1", "default image of a start command")
	imageConn := flag.String("image-conn", "shared",
		"shared: one connection for RuntimeService and ImageService; separate: a second one for images, as kubelet dials")
	plegPeriod := flag.Duration("pleg-period", time.Second, "PLEG relist period")
	statusPeriod := flag.Duration("status-period", 5*time.Second, "runtime health (Status) period")
	statsPeriod := flag.Duration("stats-period", 10*time.Second, "stats, ImageFsInfo and log manager period")
	imagesPeriod := flag.Duration("images-period", 30*time.Second, "image manager's ListImages period (0: never)")
	sandboxStats := flag.Bool("pod-sandbox-stats", true, "also ListPodSandboxStats every stats period")
	traceparent := flag.Bool("traceparent", false, "send a new W3C traceparent with each call (kubelet with tracing on)")
	comm := flag.String("comm", "", "process name for every thread (e.g. kubelet); default the binary's name")
	flag.Parse()
	if *socket == "" || *logPath == "" {
		fmt.Fprintln(os.Stderr, "usage: cri-client -socket PATH -log FILE [flags] < commands.jsonl")
		flag.PrintDefaults()
		os.Exit(2)
	}
	if *poll != "on" && *poll != "off" {
		fmt.Fprintln(os.Stderr, "-poll must be on or off")
		os.Exit(2)
	}
	if *comm != "" {
		renameThreads(*comm)
	}
	logFile, err := os.OpenFile(*logPath, os.O_CREATE|os.O_WRONLY|os.O_TRUNC|os.O_APPEND, 0o644)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cri-client:", err)
		os.Exit(1)
	}

	cli := &client{timeout: *timeout, log: &callLog{out: logFile}, traceparen: *traceparent}
	runtimeConn, err := cli.dial(*socket)
	if err != nil {
		fmt.Fprintln(os.Stderr, "cri-client: dial:", err)
		os.Exit(1)
	}
	cli.conns = append(cli.conns, runtimeConn)
	imageConnection := runtimeConn
	if *imageConn == "separate" {
		if imageConnection, err = cli.dial(*socket); err != nil {
			fmt.Fprintln(os.Stderr, "cri-client: dial:", err)
			os.Exit(1)
		}
		cli.conns = append(cli.conns, imageConnection)
	}
	cli.runtime = pb.NewRuntimeServiceClient(runtimeConn)
	cli.images = pb.NewImageServiceClient(imageConnection)
	if *comm != "" {
		renameThreads(*comm) // again, for threads grpc started meanwhile
	}

	// Start-up, in kubelet's order: the runtime client validates the
	// connection (Version with no version), the image client does
	// (ImageFsInfo), the runtime manager asks its own Version, and the
	// first runtime health check follows.
	startup := callInfo{source: "startup"}
	if _, err := cli.version(startup, ""); err != nil {
		fmt.Fprintln(os.Stderr, "cri-client: Version:", err)
		os.Exit(1)
	}
	_, _ = cli.imageFsInfo(startup, true)
	_, _ = cli.version(startup, kubeRuntimeAPIVersion)
	_, _ = cli.status(startup)

	stop := make(chan struct{})
	var pollers sync.WaitGroup
	if *poll == "on" {
		p := &pleg{cli: cli}
		every(*plegPeriod, stop, &pollers, p.relist)
		every(*statusPeriod, stop, &pollers, func() { _, _ = cli.status(callInfo{source: "health"}) })
		every(*statsPeriod, stop, &pollers, func() { statsCycle(cli, *sandboxStats) })
		if *imagesPeriod > 0 {
			every(*imagesPeriod, stop, &pollers, func() { _, _ = cli.listImages(callInfo{source: "images"}) })
		}
	}

	n := &node{cli: cli, logRoot: *logRoot, cgroupParent: *cgroupParent, resolvConf: *resolvConf,
		defaultImage: *image, pods: map[string]*startedPod{}, stdout: json.NewEncoder(os.Stdout),
		workers: map[string]chan command{}}

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, syscall.SIGTERM, syscall.SIGINT)
	lines := make(chan string)
	go func() {
		scanner := bufio.NewScanner(os.Stdin)
		scanner.Buffer(make([]byte, 1<<20), 1<<20)
		for scanner.Scan() {
			lines <- scanner.Text()
		}
		close(lines)
	}()

	exitCode := 0
loop:
	for {
		select {
		case sig := <-signals:
			fmt.Fprintln(os.Stderr, "cri-client: got", sig)
			exitCode = 1
			break loop
		case line, ok := <-lines:
			if !ok {
				break loop // end of input: as quit
			}
			line = strings.TrimSpace(line)
			if line == "" {
				continue
			}
			var cmd command
			if err := json.Unmarshal([]byte(line), &cmd); err != nil {
				n.emit(result{Op: "?", Error: "bad command: " + err.Error()})
				continue
			}
			switch cmd.Op {
			case "quit":
				break loop
			case "start", "stop":
				if cmd.Name == "" {
					n.emit(result{Op: cmd.Op, Error: "a name is required"})
					continue
				}
				if cmd.Namespace == "" {
					cmd.Namespace = "default"
				}
				n.dispatch(cmd)
			default:
				n.emit(result{Op: cmd.Op, Name: cmd.Name, Error: "unknown op " + strconv.Quote(cmd.Op)})
			}
		}
	}
	if exitCode == 0 {
		n.drain() // let started commands finish
	}
	close(stop)
	pollers.Wait()
	cli.close()
	_ = logFile.Close()
	os.Exit(exitCode)
}
