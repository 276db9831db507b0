#!/usr/bin/env python3
"""A fault battery for the daemon, against the real servers, as an operator's bad day goes.

A reference daemon reads a generated stream undisturbed. Then the same stream is replayed at a
steady rate while daemons are killed with SIGKILL and restarted, InfluxDB hangs (SIGSTOP), the
webhook receiver goes away, the alerts store's PostgreSQL hangs, and the broker becomes
unreachable. What the sinks hold afterwards is compared with the reference:

  findings     lost / extra (by id, status, severity), and repeats on stdout after a restart
  alerts table lost / extra / different rows
  webhooks     notifications lost / extra, and delivered more than once (same webhook-id)
  InfluxDB     raw requests stored, against the reference
  re-reading   records read again after the restarts (all of them, and per restart)

    scripts/chaos/chaos.sh [--cycles N] [--sessions N] [--rate N] [--store sqlite|postgres]

Exits 1 if anything was lost, invented or differs. Needs what .ci/run installs (librdkafka-dev,
influxdb, postgresql for --store postgres) and a built cmcd-sentinel.
"""
import argparse, json, os, random, signal, socket, sqlite3, subprocess, sys, tempfile, time, urllib.parse, urllib.request
from urllib.parse import quote

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SECRET = "whsec_Y2hhb3Mtc2VjcmV0LW9ubHktZm9yLXRlc3Rz"
T0 = 1720015600.0


_handed_out = set()


def free_port():
    """A free port on 127.0.0.1, never one handed out before in this run: the kernel may give
    a just-closed port again, and two servers told the same port collide."""
    while True:
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        s.close()
        if port not in _handed_out:
            _handed_out.add(port)
            return port


def log(*a):
    print("chaos:", *a, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# The stream: viewers of several kinds, CloudFront's default fields, interleaved in time.

def line(t, sid, ot, seg, edge, **keys):
    keys = dict(sid=sid, cid="chaos-movie", ot=ot, sf="h", st="v", **keys)
    parts = []
    for k in sorted(keys):
        v = keys[k]
        if v is True:
            parts.append(k)
        elif isinstance(v, str) and k in ("sid", "cid"):
            parts.append(f'{k}="{v}"')
        else:
            parts.append(f"{k}={v}")
    stem = "/videos/master.m3u8" if ot == "m" else f"/videos/1080p_{seg:05d}.ts"
    return (t, "\t".join([f"{t:.3f}", "198.51.100.7", "200", "GET", stem, edge, f"r{sid}-{seg}", "0.100",
                          "CMCD=" + quote(",".join(parts), safe=""), "Host:d1.cloudfront.net%0A"]))


def generate(sessions, seed):
    rnd = random.Random(seed)
    out = []
    for n in range(sessions):
        sid = f"chaos-{n:05d}"
        edge = f"POP{n % 7}-C1"
        start = T0 + n * 0.35
        kind = rnd.choice(["healthy"] * 5 + ["drop", "stall", "slowstart", "stuck"])
        out.append(line(start, sid, "m", 0, edge, su=True))
        startup = {"slowstart": 3.5, "stuck": 99}.get(kind, rnd.uniform(0.6, 1.5))
        if kind == "stuck":
            for i in range(1, 9):
                out.append(line(start + i, sid, "av", i, edge, su=True, bl=0, br=3000, d=4000))
            continue
        out.append(line(start + 0.3, sid, "av", 1, edge, su=True, bl=0, br=3000, d=4000))
        t = start + startup
        bl = 4000
        for i in range(2, 2 + rnd.randint(12, 24)):
            extra = {}
            if kind == "drop" and i == 8:
                bl = 2500
            elif kind == "stall" and i == 8:
                bl, extra = 0, {"bs": True, "su": True}
            else:
                bl = min(bl + 3000, 24000)
            out.append(line(t, sid, "av", i, edge, bl=bl, br=3000, d=4000, **extra))
            t += 2.0
    out.sort(key=lambda x: x[0])
    return [text for _, text in out]


# ---------------------------------------------------------------------------------------------
# Servers and processes.

class Chaos:
    def __init__(self, args):
        self.args = args
        self.work = tempfile.mkdtemp(prefix="chaos-", dir=os.path.join(ROOT, ".tools"))
        self.env = dict(os.environ)
        self.env["SENTINEL_BROKER_PORT"] = str(free_port())
        self.env["SENTINEL_BROKER_UPSTREAM_PORT"] = str(free_port())
        self.env["SENTINEL_INFLUX_PORT"] = str(free_port())
        self.env["SENTINEL_INFLUX_RPC_PORT"] = str(free_port())
        self.env["SENTINEL_POSTGRES_PORT"] = str(free_port())
        self.brokers = f"127.0.0.1:{self.env['SENTINEL_BROKER_PORT']}"
        self.influx = f"http://127.0.0.1:{self.env['SENTINEL_INFLUX_PORT']}"
        self.bin = os.path.join(subprocess.check_output(["swift", "build", "--show-bin-path"], cwd=ROOT, text=True).strip(), "cmcd-sentinel")
        self.receivers = {}
        self.postgres_url = None
        self.stopped = []

    def script(self, *argv, capture=False):
        return subprocess.run([os.path.join(ROOT, argv[0])] + list(argv[1:]), cwd=ROOT, env=self.env, check=True,
                              stdout=subprocess.PIPE if capture else subprocess.DEVNULL, text=True).stdout

    def start_servers(self):
        self.script("scripts/broker/broker.sh", "start")
        for topic in ("ref", "chaos"):
            self.script("scripts/broker/broker.sh", "topic", topic, "4")
        self.script("scripts/influx/influxd.sh", "start", "ref")
        self.influx_query("CREATE DATABASE chaos", post=True)
        if self.args.store == "postgres":
            self.postgres_url = self.script("scripts/postgres/postgres.sh", "start", capture=True).strip().splitlines()[-1]
        for name in ("ref", "chaos"):
            self.start_receiver(name, free_port())

    def stop_servers(self):
        for p in self.stopped:
            try:
                os.kill(p, signal.SIGCONT)
            except OSError:
                pass
        for name in list(self.receivers):
            self.stop_receiver(name)
        servers = [["scripts/influx/influxd.sh", "stop"], ["scripts/broker/broker.sh", "stop"]]
        if self.postgres_url:
            servers.append(["scripts/postgres/postgres.sh", "stop"])
        for argv in servers:
            subprocess.run([os.path.join(ROOT, argv[0])] + argv[1:], cwd=ROOT, env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_receiver(self, name, port):
        p = subprocess.Popen([sys.executable, os.path.join(ROOT, "scripts/webhook/receiver.py"), "--port", str(port), "--secret", SECRET,
                              "--log", os.path.join(self.work, f"{name}-deliveries.jsonl")], stderr=subprocess.DEVNULL)
        self.receivers[name] = (p, port)
        for _ in range(50):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.1)

    def stop_receiver(self, name):
        p, port = self.receivers.pop(name)
        p.kill()
        p.wait()
        return port

    def influx_query(self, q, db=None, post=False):
        params = {"q": q}
        if db:
            params["db"] = db
        data = urllib.parse.urlencode(params).encode()
        req = urllib.request.Request(f"{self.influx}/query", data=data if post else None) if post else \
            urllib.request.Request(f"{self.influx}/query?{data.decode()}")
        return json.load(urllib.request.urlopen(req, timeout=10))

    def influx_count(self, db):
        r = self.influx_query("SELECT count(cmcd_v) FROM cloudfront_logs", db=db)["results"][0]
        return r["series"][0]["values"][0][1] if r.get("series") else 0

    def config(self, name, store):
        path = os.path.join(self.work, f"{name}.yaml")
        # The default rules, with pages sent at once (faults, not grouping, are tested here).
        rules = os.path.join(self.work, "rules.yaml")
        with open(os.path.join(ROOT, "rules", "default.yaml")) as src, open(rules, "w") as dst:
            dst.write(src.read().replace("group_wait_ms: 30000", "group_wait_ms: 0"))
        with open(path, "w") as f:
            f.write(f"""rules: "{rules}"
influx: {{url: "{self.influx}", database: {name}, flush_interval_ms: 200}}
alerts: {{url: "{store}"}}
webhooks:
  - {{name: default, url: "http://127.0.0.1:{self.receivers[name][1]}/hook", secret: "{SECRET}", timeout_ms: 2000}}
output: {{stdout: true}}
""")
        return path

    def daemon(self, name, config, metrics_port=None, idle=None):
        argv = [self.bin, "run", "--config", config, "--brokers", self.brokers, "--topic", name, "--group", f"g-{name}", "--partitions", "0,1,2,3"]
        if idle:
            argv += ["--exit-when-idle", str(idle)]
        env = dict(self.env)
        env["SENTINEL_HTTP_LISTEN"] = f"127.0.0.1:{metrics_port}" if metrics_port else ""
        out = open(os.path.join(self.work, f"{name}-stdout.jsonl"), "a")
        err = open(os.path.join(self.work, f"{name}-stderr.log"), "a")
        return subprocess.Popen(argv, env=env, stdout=out, stderr=err, cwd=ROOT)

    def replay(self, topic, data, rate=None):
        argv = [self.bin, "replay", "--brokers", self.brokers, "--topic", topic, "--property", "max.in.flight.requests.per.connection=1", data]
        if rate:
            argv[2:2] = ["--rate", str(rate)]
        return subprocess.Popen(argv, env=self.env, stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, f"replay-{topic}.log"), "a"))


def consumed_of(port):
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=0.5).read().decode()
    except OSError:
        return None
    for l in text.splitlines():
        if l.startswith("cmcd_sentinel_records_consumed_total "):
            return int(float(l.split()[1]))
    return None


def stopped_after(stderr_path):
    """The records each daemon that stopped cleanly read ("stopped after N records")."""
    with open(stderr_path) as f:
        return [int(l.split("stopped after")[1].split()[0]) for l in f if "stopped after" in l]


def pending_notifications(c, store):
    q = "SELECT COUNT(*) FROM notifications WHERE state = 'pending'"
    if store.startswith("sqlite:"):
        return sqlite3.connect(store[len("sqlite:"):]).execute(q).fetchone()[0]
    return int(psql(c, store, q)[0][0])


def alert_rows(c, store):
    q = "SELECT id, type, status, severity, session_id, started_at FROM alerts"
    if store.startswith("sqlite:"):
        return {tuple(str(v) for v in r) for r in sqlite3.connect(store[len("sqlite:"):]).execute(q)}
    return {tuple(r) for r in psql(c, store, q)}


def psql(c, url, q):
    out = subprocess.run(["psql", url, "-At", "-F", "\t", "-c", q], check=True, capture_output=True, text=True).stdout
    return [l.split("\t") for l in out.splitlines() if l]


def finding_keys(path):
    keys = []
    with open(path) as f:
        for l in f:
            try:
                j = json.loads(l)
            except ValueError:
                continue
            if "id" in j and "status" in j:
                keys.append((j["id"], j["status"], j["severity"]))
    return keys


def deliveries(path):
    ok = {}
    if os.path.exists(path):
        with open(path) as f:
            for l in f:
                d = json.loads(l)
                if 200 <= d["status"] < 300 and d["signature_valid"]:
                    ok[d["id"]] = ok.get(d["id"], 0) + 1
    return ok


def drain(c, name, config, store):
    """Runs the daemon until every record is read and every notification delivered."""
    for _ in range(30):
        p = c.daemon(name, config, idle=4)
        p.wait()
        if pending_notifications(c, store) == 0:
            return
    log(f"{name}: notifications still pending after the drain")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cycles", type=int, default=20, help="kill -9 and restart this many times")
    ap.add_argument("--sessions", type=int, default=2000)
    ap.add_argument("--rate", type=float, default=0, help="records per second (default: the stream lasts about 3 s per cycle)")
    ap.add_argument("--store", choices=["sqlite", "postgres"], default="sqlite")
    ap.add_argument("--seed", type=int, default=2026)
    ap.add_argument("--no-checkpoints", action="store_true", help="without detection checkpoints (alerts.checkpoints: false), to compare")
    args = ap.parse_args()
    c = Chaos(args)
    if args.no_checkpoints:
        c.env["SENTINEL_ALERTS_CHECKPOINTS"] = "false"
    data = os.path.join(c.work, "stream.tsv")
    lines = generate(args.sessions, args.seed)
    with open(data, "w") as f:
        f.write("\n".join(lines) + "\n")
    rate = args.rate or max(50.0, len(lines) / (3.0 * args.cycles))
    log(f"{args.sessions} sessions, {len(lines)} records at {rate:.0f}/s, {args.cycles} kill -9 cycles, alerts in {args.store}; work in {c.work}")
    try:
        c.start_servers()
        # The reference: the stream read undisturbed.
        ref_store = f"sqlite:{c.work}/ref.db"
        c.replay("ref", data).wait()
        drain(c, "ref", c.config("ref", ref_store), ref_store)
        # The same stream, with faults.
        chaos_store = c.postgres_url if args.store == "postgres" else f"sqlite:{c.work}/chaos.db"
        chaos_config = c.config("chaos", chaos_store)
        replay = c.replay("chaos", data, rate)
        consumed = []
        faults = []
        for cycle in range(args.cycles):
            port = free_port()
            p = c.daemon("chaos", chaos_config, metrics_port=port)
            fault = ["none", "influx", "webhooks", "postgres" if args.store == "postgres" else "none", "broker"][cycle % 5]
            if fault == "broker" and cycle >= 10:
                fault = "none"  # two broker outages are enough
            started = time.time()
            last = 0
            hold = random.Random(cycle).uniform(2.0, 4.0) + (6.0 if fault != "none" else 0.0)
            undone = None
            while time.time() - started < hold:
                n = consumed_of(port)
                if n is not None:
                    last = n
                t = time.time() - started
                if fault != "none" and undone is None and t > 1.0:
                    undone = inject(c, fault)
                    faults.append(fault)
                if undone and t > hold - 1.5:
                    undone()
                    undone = False
                time.sleep(0.05)
            if undone:
                undone()
            p.send_signal(signal.SIGKILL)
            p.wait()
            consumed.append(last)
        replay.wait()
        drain(c, "chaos", chaos_config, chaos_store)
        # Killed daemons as last seen on /metrics; the final drain (perhaps several runs) from the log.
        total_read = sum(consumed) + sum(stopped_after(os.path.join(c.work, "chaos-stderr.log")))
        ok = report(c, lines, ref_store, chaos_store, total_read, args, faults)
    finally:
        c.stop_servers()
    if not ok:
        log(f"the logs and data stay in {c.work}")
        sys.exit(1)
    subprocess.run(["rm", "-rf", c.work])


def inject(c, fault):
    """Starts a fault; returns what ends it."""
    if fault == "influx":
        pid = int(open(os.path.join(ROOT, f".tools/influx-{c.env['SENTINEL_INFLUX_PORT']}/pid")).read())
        os.kill(pid, signal.SIGSTOP)
        c.stopped.append(pid)
        return lambda: os.kill(pid, signal.SIGCONT)
    if fault == "webhooks":
        port = c.stop_receiver("chaos")
        return lambda: c.start_receiver("chaos", port)
    if fault == "postgres":
        # This server only: its postmaster and the backends it forked.
        postmaster = int(open(f"/tmp/cmcd-sentinel-pg-{c.env['SENTINEL_POSTGRES_PORT']}/data/postmaster.pid").readline())
        pids = [postmaster] + [int(p) for p in subprocess.run(["pgrep", "-P", str(postmaster)], capture_output=True, text=True).stdout.split()]
        for pid in set(pids):
            try:
                os.kill(pid, signal.SIGSTOP)
                c.stopped.append(pid)
            except OSError:
                pass

        def resume():
            for pid in set(pids):
                try:
                    os.kill(pid, signal.SIGCONT)
                except OSError:
                    pass
        return resume
    if fault == "broker":
        c.script("scripts/broker/broker.sh", "outage-start")
        return lambda: c.script("scripts/broker/broker.sh", "outage-end")
    return lambda: None


def report(c, lines, ref_store, chaos_store, total_read, args, faults):
    ref = finding_keys(os.path.join(c.work, "ref-stdout.jsonl"))
    chaos = finding_keys(os.path.join(c.work, "chaos-stdout.jsonl"))
    ref_set, chaos_set = set(ref), set(chaos)
    ref_rows, chaos_rows = alert_rows(c, ref_store), alert_rows(c, chaos_store)
    ref_hooks = deliveries(os.path.join(c.work, "ref-deliveries.jsonl"))
    chaos_hooks = deliveries(os.path.join(c.work, "chaos-deliveries.jsonl"))
    influx_ref, influx_chaos = c.influx_count("ref"), c.influx_count("chaos")
    reread = total_read - len(lines)
    rows = [
        ("records", len(lines), ""),
        ("kill -9 restarts", args.cycles, f"faults: {', '.join(f'{f} x{faults.count(f)}' for f in sorted(set(faults))) or 'none'}"),
        ("findings (reference)", len(ref_set), ""),
        ("findings lost", len(ref_set - chaos_set), ""),
        ("findings extra", len(chaos_set - ref_set), ""),
        ("findings repeated on stdout", len(chaos) - len(chaos_set), "re-read after a kill; the sinks absorb them by id"),
        ("alerts rows (reference)", len(ref_rows), ""),
        ("alerts rows lost / extra", f"{len(ref_rows - chaos_rows)} / {len(chaos_rows - ref_rows)}", ""),
        ("notifications (reference)", len(ref_hooks), ""),
        ("notifications lost / extra", f"{len(set(ref_hooks) - set(chaos_hooks))} / {len(set(chaos_hooks) - set(ref_hooks))}", ""),
        ("notifications delivered twice", sum(1 for n in chaos_hooks.values() if n > 1), "same webhook-id (a kill between delivery and its record)"),
        ("InfluxDB requests (reference / chaos)", f"{influx_ref} / {influx_chaos}", ""),
        ("records re-read", reread, f"{reread / max(args.cycles, 1):.1f} per restart"),
    ]
    width = max(len(r[0]) for r in rows)
    print(f"chaos: {args.sessions} sessions, alerts in {args.store}{', no checkpoints' if args.no_checkpoints else ''}")
    for name, value, note in rows:
        print(f"  {name:<{width}}  {value}{'   (' + note + ')' if note else ''}")
    bad = (ref_set - chaos_set) or (chaos_set - ref_set) or (ref_rows != chaos_rows) or (set(ref_hooks) != set(chaos_hooks)) or influx_ref != influx_chaos
    if bad:
        for k in sorted(ref_set - chaos_set)[:5]:
            print("  lost:", k)
        for k in sorted(chaos_set - ref_set)[:5]:
            print("  extra:", k)
        print("chaos: FAILED")
        return False
    print("chaos: nothing lost, nothing invented")
    return True


if __name__ == "__main__":
    main()
