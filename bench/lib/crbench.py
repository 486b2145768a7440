"""bench/lib/crbench.py - what bench/workloads, bench/scale, bench/allocs and bench/profile share.

Follows the shared harness (../shared/bench/run, beside the repository): the
same backend nginx (4 servers, 100-byte bodies, access logs counting requests
per backend), the same haproxy / nginx / crouter settings, wrk on 127.0.0.1,
and its lib/benchlib.py for the wrk measurement with /proc accounting
(measure_once), NATS publishing and CPU/RSS of process trees. Added here: a
1 MiB file and 1 MiB uploads on the backends, worker counts per contender,
status-API helpers, and one process list ended by PID when the script exits,
even on Ctrl-C. Python 3 standard library only.
"""
import argparse
import atexit
import base64
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("BENCH_SHARED_DIR", os.path.join(os.path.dirname(ROOT), "shared", "bench"))
sys.path.insert(0, os.path.join(SHARED, "lib"))
try:
    import benchlib as bl  # noqa: E402  (the shared harness's helpers)
except ImportError:
    sys.exit("bench: the shared harness is not at %s (set BENCH_SHARED_DIR)" % SHARED)

WRK_LUA = os.path.join(ROOT, "bench", "lib", "wrk.lua")
ROUTE_HOST = "app.bench.local"
STATUS_USER = STATUS_PASS = "bench"
MIB = 1024 * 1024


def log(msg):
    print("[bench] " + msg, file=sys.stderr, flush=True)


# ------------------------------------------------------------ processes
class Procs:
    """Every process the script starts, stopped in reverse order by PID at exit."""

    def __init__(self, tmp):
        self.tmp = tmp
        self.procs = []
        atexit.register(self.stop_all)
        signal.signal(signal.SIGTERM, lambda s, f: sys.exit(143))
        signal.signal(signal.SIGINT, lambda s, f: sys.exit(130))

    def start(self, name, argv, env=None):
        out = open(os.path.join(self.tmp, name + ".out"), "ab")
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                             env=env)
        out.close()
        p.bench_name = name
        self.procs.append(p)
        return p

    def stop(self, p):
        if p.poll() is None:
            kids = [k for k in bl.proc_tree(p.pid) if k != p.pid]
            p.terminate()
            try:
                p.wait(timeout=5)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            for k in kids:
                try:
                    os.kill(k, signal.SIGKILL)
                except OSError:
                    pass
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in reversed(list(self.procs)):
            self.stop(p)

    def output(self, name, lines=20):
        try:
            with open(os.path.join(self.tmp, name + ".out"), errors="replace") as f:
                return "".join(f.readlines()[-lines:])
        except OSError:
            return ""


def make_tmp():
    tmp = tempfile.mkdtemp(prefix="crouter-bench.")
    if os.environ.get("BENCH_KEEP_TMP") != "1":
        atexit.register(lambda: subprocess.call(["rm", "-rf", tmp]))
    else:
        atexit.register(lambda: log("temp dir kept: " + tmp))
    return tmp


def free_ports(n):
    socks = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def wait_port(port, proc, timeout_s=10):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError("%s exited early" % proc.bench_name)
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError("%s did not listen on 127.0.0.1:%d" % (proc.bench_name, port))


def rss_kib(pid, key="VmRSS"):
    total = 0
    for p in bl.proc_tree(pid):
        try:
            with open("/proc/%d/status" % p) as f:
                for line in f:
                    if line.startswith(key + ":"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def install_deps():
    """scripts/install-deps.sh --bench (haproxy, nginx, wrk, liburing, valgrind and the
    build dependencies), skipped with CROUTER_NO_INSTALL=1."""
    if os.environ.get("CROUTER_NO_INSTALL") != "1":
        subprocess.check_call([os.path.join(ROOT, "scripts", "install-deps.sh"), "--bench"])


def build_crouter():
    """Installs what the benchmarks need, then a Release build with -g in build-bench/
    (CROUTER_BIN skips the build); returns the binary."""
    install_deps()
    if os.environ.get("CROUTER_BIN"):
        return os.path.abspath(os.environ["CROUTER_BIN"])
    bdir = os.path.join(ROOT, os.environ.get("CROUTER_BENCH_BUILD", "build-bench"))
    subprocess.check_call(["cmake", "-S", ROOT, "-B", bdir, "-DCMAKE_BUILD_TYPE=Release",
                           "-DCMAKE_C_FLAGS=-g", "-DCROUTER_TESTS=OFF"], stdout=subprocess.DEVNULL)
    subprocess.check_call(["cmake", "--build", bdir, "-j%d" % (os.cpu_count() or 2),
                           "--target", "crouter"], stdout=subprocess.DEVNULL)
    return os.path.join(bdir, "crouter")


def build_tool(name):
    """Compiles bench/<name>.c with cc into build-bench/tools/ when out of date
    (nats_flood links libnats, floor_forward liburing, malloc_count is a preload)."""
    src = os.path.join(ROOT, "bench", name + ".c")
    outdir = os.path.join(ROOT, os.environ.get("CROUTER_BENCH_BUILD", "build-bench"), "tools")
    os.makedirs(outdir, exist_ok=True)
    if name == "malloc_count":
        out = os.path.join(outdir, "malloc_count.so")
        cmd = ["cc", "-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared",
               "-o", out, src, "-ldl"]
    else:
        out = os.path.join(outdir, name)
        if name == "floor_forward":
            libs = ["-luring"]
        else:
            libs = subprocess.check_output(["pkg-config", "--cflags", "--libs", "libnats"],
                                           text=True).split()
        cmd = ["cc", "-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-o", out, src] + libs
    if not os.path.exists(out) or os.path.getmtime(out) < os.path.getmtime(src):
        subprocess.check_call(cmd)
    return out


# -------------------------------------------------------------- backends
def nginx_main(d, workers):
    user = "user root;\n" if os.getuid() == 0 else ""
    return user + """worker_processes %d;
pid %s/nginx.pid;
error_log %s/error.log error;
daemon off;
master_process on;
worker_rlimit_nofile 10000;
events { worker_connections 4096; }
""" % (workers, d, d)


def nginx_http(d):
    return """    client_body_temp_path %s/tmp_body;
    proxy_temp_path %s/tmp_proxy;
    access_log off;
    server_tokens off;
    keepalive_requests 100000000;
    keepalive_timeout 300s;
    client_max_body_size 4m;
""" % (d, d)


def start_nginx(procs, name, d, conf):
    with open(os.path.join(d, "nginx.conf"), "w") as f:
        f.write(conf)
    subprocess.check_call(["nginx", "-t", "-q", "-p", d + "/", "-c", d + "/nginx.conf", "-e",
                           d + "/error.log"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return procs.start(name, ["nginx", "-p", d + "/", "-c", d + "/nginx.conf", "-e",
                              d + "/error.log"])


def start_backend(procs, tmp, ports, workers=1):
    """The shared harness's backend nginx (4 servers, 100-byte body, X-Backend,
    Set-Cookie JSESSIONID, per-server access logs) plus GET /1m (a 1 MiB file)
    and request bodies up to 4 MiB (read and discarded). Returns (proc, logdir)."""
    d = os.path.join(tmp, "backend")
    os.makedirs(os.path.join(d, "www"), exist_ok=True)
    with open(os.path.join(d, "www", "1m"), "wb") as f:
        f.write((b"0123456789abcdef" * 64 + b"\n")[:1024] * 1024)
    conf = nginx_main(d, workers) + "http {\n" + nginx_http(d)
    conf += "    log_format bench '$status';\n    default_type text/plain;\n"
    conf += "    sendfile on;\n    tcp_nopush on;\n"
    for i, port in enumerate(ports, 1):
        body = ("crouter-bench backend %d " % i).ljust(99, "x")
        conf += """    server {
        listen 127.0.0.1:%d backlog=4096;
        access_log %s/b%d.access.log bench buffer=64k flush=1s;
        location / {
            add_header X-Backend %d always;
            add_header Set-Cookie "JSESSIONID=bench-session-%d; Path=/; HttpOnly" always;
            return 200 "%s\\n";
        }
        location = /1m { root %s/www; add_header X-Backend %d always; }
    }
""" % (port, d, i, i, i, body, d, i)
    conf += "}\n"
    p = start_nginx(procs, "backend", d, conf)
    for port in ports:
        wait_port(port, p)
    return p, d


def start_haproxy(procs, tmp, name, port, backends, nbthread):
    """The shared harness's haproxy (roundrobin + SERVERID cookie, http-keep-alive)."""
    servers = "".join("    server s%d 127.0.0.1:%d cookie s%d\n" % (i, b, i)
                      for i, b in enumerate(backends, 1))
    cfg = os.path.join(tmp, name + ".cfg")
    with open(cfg, "w") as f:
        f.write("""global
    nbthread %d
    maxconn 4096

defaults
    mode http
    option http-keep-alive
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s

frontend fe
    bind 127.0.0.1:%d
    default_backend be

backend be
    balance roundrobin
    cookie SERVERID insert indirect nocache
%s""" % (nbthread, port, servers))
    p = procs.start(name, ["haproxy", "-db", "-f", cfg])
    wait_port(port, p)
    return p


def start_nginx_proxy(procs, tmp, name, port, backends, workers):
    """The shared harness's nginx proxy (upstream keepalive, JSESSIONID hash), with
    proxy_buffering and proxy_request_buffering off so that it streams bodies
    like haproxy and crouter instead of spooling them to temp files."""
    d = os.path.join(tmp, name)
    os.makedirs(d, exist_ok=True)
    servers = "".join("        server 127.0.0.1:%d;\n" % b for b in backends)
    conf = nginx_main(d, workers) + "http {\n" + nginx_http(d) + """    upstream be {
        hash $cookie_JSESSIONID consistent;
%s        keepalive 64;
        keepalive_requests 100000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:%d backlog=4096;
        location / {
            proxy_pass http://be;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_buffering off;
            proxy_request_buffering off;
        }
    }
}
""" % (servers, port)
    p = start_nginx(procs, name, d, conf)
    wait_port(port, p)
    return p


def start_nats(procs, tmp, name="nats"):
    port = free_ports(1)[0]
    p = procs.start(name, ["nats-server", "-a", "127.0.0.1", "-p", str(port), "-l",
                           os.path.join(tmp, name + ".log")])
    wait_port(port, p)
    return p, port


# --------------------------------------------------------------- crouter
class Crouter:
    """One crouter process with the shared harness's config shape."""

    def __init__(self, procs, tmp, name, binary, nats_port, workers=1, extra=None, env=None,
                 wrapper=None):
        self.name = name
        self.port, self.status_port, self.routes_port = free_ports(3)
        cfg = os.path.join(tmp, name + ".yml")
        keys = {
            "droplet_stale_threshold": "3600s",
            "prune_stale_droplets_interval": "30s",
            "start_response_delay_interval": "1s",
            "publish_start_message_interval": "30s",
        }
        keys.update(extra or {})
        with open(cfg, "w") as f:
            f.write("""port: %d
status:
  host: 127.0.0.1
  port: %d
  user: %s
  pass: %s
  routes:
    port: %d
nats:
  hosts:
    - hostname: 127.0.0.1
      port: %d
  user: ""
  pass: ""
suspend_pruning_if_nats_unavailable: false
endpoint_timeout: 60s
endpoint_dial_timeout: 5s
frontend_idle_timeout: 900s
sticky_session_cookie_names: [JSESSIONID]
balancing_algorithm: round-robin
backends:
  max_conns: 0
  max_attempts: 3
secure_cookies: false
access_log:
  file: ""
logging:
  level: info
pid_file: ""
index: 0
zone: ""
workers: %d
""" % (self.port, self.status_port, STATUS_USER, STATUS_PASS, self.routes_port, nats_port,
                workers))
            for k, v in keys.items():
                f.write("%s: %s\n" % (k, v))
        argv = (wrapper or []) + [binary, "-c", cfg]
        self.proc = procs.start(name, argv, env=env)
        self.pid = self.proc.pid
        self.procs = procs

    def url(self, path="/"):
        return "http://127.0.0.1:%d%s" % (self.port, path)

    def status(self, path, timeout=30):
        req = urllib.request.Request("http://127.0.0.1:%d%s" % (self.status_port, path))
        tok = base64.b64encode(("%s:%s" % (STATUS_USER, STATUS_PASS)).encode()).decode()
        req.add_header("Authorization", "Basic " + tok)
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.read()

    def varz(self):
        return json.loads(self.status("/varz"))

    def wait_healthy(self, timeout_s=60):
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (self.name, self.procs.output(self.name)))
            try:
                with urllib.request.urlopen("http://127.0.0.1:%d/health" % self.status_port,
                                            timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.1)
        raise RuntimeError("%s not healthy within %d s" % (self.name, timeout_s))

    def wait_routes(self, nats_port, reg_file, host=ROUTE_HOST, want=4, timeout_s=60):
        """Publishes reg_file until /routes lists `want` endpoints for host, then
        waits until the proxy answers 200 for it."""
        deadline = time.time() + timeout_s
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited: %s" % (self.name, self.procs.output(self.name)))
            bl.cmd_nats_pub(argparse.Namespace(port=nats_port, subject="router.register",
                                               file=reg_file))
            try:
                routes = json.loads(self.status("/routes"))
                if len({e["address"] for e in routes.get(host, [])}) >= want:
                    break
            except (OSError, ValueError):
                pass
            time.sleep(0.3)
        while time.time() < deadline:
            if http_status(self.url(), host) == 200:
                return
            time.sleep(0.1)
        raise RuntimeError("%s: no 200 for Host %s" % (self.name, host))


def write_registrations(path, backends, host=ROUTE_HOST):
    """The shared harness's 4 registrations (bench-instance-1..4) for host."""
    now = time.time_ns()
    with open(path, "w") as f:
        for i, port in enumerate(backends, 1):
            f.write(json.dumps({
                "host": "127.0.0.1", "port": port, "uris": [host], "app": "bench-app-guid",
                "private_instance_id": "bench-instance-%d" % i,
                "private_instance_index": str(i - 1), "tags": {"component": "bench"},
                "stale_threshold_in_seconds": 3600, "protocol": "http1",
                "availability_zone": "", "endpoint_updated_at_ns": now}) + "\n")


def http_status(url, host, method="GET", body=None, timeout=5):
    """(status) of one request with curl; 0 when it failed."""
    cmd = ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", str(timeout),
           "-H", "Host: " + host, "-X", method, url]
    if body is not None:
        cmd[1:1] = ["--data-binary", "@" + body, "-H", "Content-Type: application/octet-stream"]
    try:
        return int(subprocess.run(cmd, capture_output=True, text=True).stdout or 0)
    except ValueError:
        return 0


# ------------------------------------------------------------------ wrk
def measure(name, workload, url, proxy_pid, backend_pid, logdir, tmp, seconds, rnd=1,
            threads=1, conns=50, env_extra=None, host=ROUTE_HOST, warmup=0, backends=4):
    """One wrk run through the shared benchlib.measure_once (req/s, latency,
    proxy CPU per request, VmHWM, backend split, CPU used by others), plus the
    largest VmRSS of the proxy's process tree sampled every 50 ms."""
    a = argparse.Namespace(name=name, workload=workload, url=url, host=host, cookie="",
                           lua=WRK_LUA, logdir=logdir, out="", wrk_log=os.path.join(tmp, "wrk.log"),
                           seconds=str(seconds), warmup=str(warmup), proxy_pid=proxy_pid,
                           backend_pid=backend_pid, backends=backends, threads=threads,
                           conns=conns, round=rnd, quiet_wait=0)
    env = dict(os.environ, BENCH_HOST=host, BENCH_COOKIE="")
    for k in ("BENCH_CLOSE", "BENCH_METHOD", "BENCH_BODY_BYTES", "BENCH_HOSTS_N",
              "BENCH_HOSTS_FIRST", "BENCH_HOSTS_MOD", "BENCH_STOP_AFTER"):
        env.pop(k, None)
    env.update(env_extra or {})
    if warmup:
        bl.run_wrk(a, warmup, env)
    peak = [0]
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            peak[0] = max(peak[0], rss_kib(proxy_pid))
            stop.wait(0.05)
    t = threading.Thread(target=sample, daemon=True)
    t.start()
    try:
        rec = bl.measure_once(a, env)
    finally:
        stop.set()
        t.join()
    rec["max_rss_kib"] = peak[0]
    if "error" not in rec:
        rec["socket_errors_total"] = sum(rec["socket_errors"].values())
    return rec


def med(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def machine_note():
    with open("/proc/loadavg") as f:
        load = f.read().split()[:3]
    return "%d CPUs, load average %s" % (os.cpu_count() or 0, " ".join(load))


def busy_pct(seconds=1.0):
    """CPU (% of one core) used by every process during `seconds` (shared benchlib)."""
    t0 = bl._all_cpu_ticks()
    time.sleep(seconds)
    t1 = bl._all_cpu_ticks()
    return sum(max(0, t1[p][1] - t0[p][1]) for p in t1 if p in t0) * 100.0 / bl.CLK_TCK / seconds


def md_table(rows):
    widths = [max(len(str(r[i])) for r in rows) for i in range(len(rows[0]))]
    out = []
    for n, r in enumerate(rows):
        out.append("| " + " | ".join(str(x).ljust(widths[i]) if i < 2 else str(x).rjust(widths[i])
                                     for i, x in enumerate(r)) + " |")
        if n == 0:
            out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(out)


def git_commit():
    try:
        return subprocess.check_output(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"],
                                       text=True, stderr=subprocess.DEVNULL).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
