#!/usr/bin/env python3
"""End-to-end tests of `celine serve` over real loopback sockets.

Usage: e2e.py SUITE   (api | limits | shutdown | generate | openai_client)
Environment: CELINE (the binary), CELINE_SRC (the source tree).

Every wait is bounded; every server is started on an ephemeral port
(--port 0) and found through its `celine: listening on http://HOST:PORT` line.
"""
import http.client
import json
import re
import shutil
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

CELINE = os.environ.get("CELINE", "celine")
SRC = os.environ.get("CELINE_SRC", os.path.join(os.path.dirname(__file__), "..", "..", ".."))

failures = []


def check(cond, what):
    if cond:
        print("  ok   " + what)
    else:
        print("  FAIL " + what)
        failures.append(what)


class Server:
    """A `celine serve` process on 127.0.0.1 with an ephemeral port."""

    def __init__(self, *args, env=None, ready_timeout=60):
        self.proc = subprocess.Popen([CELINE, "serve", "--port", "0", *args], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE, env=env)
        self.port = None
        deadline = time.time() + ready_timeout
        line = b""
        # the first stdout line names the address; read it with a deadline
        os.set_blocking(self.proc.stdout.fileno(), False)
        while time.time() < deadline and self.port is None:
            if self.proc.poll() is not None:
                break
            try:
                chunk = self.proc.stdout.read()
            except BlockingIOError:
                chunk = None
            if chunk:
                line += chunk
                for ln in line.decode(errors="replace").splitlines():
                    if ln.startswith("celine: listening on http://127.0.0.1:"):
                        self.port = int(ln.rsplit(":", 1)[1])
            else:
                time.sleep(0.02)
        if self.port is None:
            self.proc.kill()
            out, err = self.proc.communicate(timeout=10)
            raise RuntimeError("server did not start: %r %r" % (line + out, err))
        self.stderr_thread = threading.Thread(target=self._drain, daemon=True)
        self.stderr_lines = []
        self.stderr_thread.start()

    def _drain(self):
        for ln in self.proc.stderr:
            self.stderr_lines.append(ln.decode(errors="replace").rstrip())

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def sock(self, timeout=10):
        s = socket.create_connection(("127.0.0.1", self.port), timeout=timeout)
        return s

    def request(self, method, path, body=None, headers=None, timeout=60):
        c = self.conn(timeout)
        h = dict(headers or {})
        if isinstance(body, (dict, list)):
            body = json.dumps(body)
            h.setdefault("Content-Type", "application/json")
        c.request(method, path, body=body, headers=h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, dict(r.getheaders()), data

    def json(self, method, path, body=None, headers=None, timeout=60):
        st, h, data = self.request(method, path, body, headers, timeout)
        try:
            return st, h, json.loads(data)
        except ValueError:
            return st, h, data

    def stop(self, sig=signal.SIGTERM, timeout=30):
        if sig is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
            rc = "timeout"
        self.stderr_thread.join(timeout=5)
        return rc


def recv_all(s, limit=1 << 22, idle=2.0):
    """Reads until EOF, the byte limit, or `idle` seconds without data."""
    s.settimeout(idle)
    data = b""
    while len(data) < limit:
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def recv_until(s, needle, limit=1 << 22, timeout=10.0):
    deadline = time.time() + timeout
    data = b""
    while needle not in data and len(data) < limit and time.time() < deadline:
        s.settimeout(max(0.05, deadline - time.time()))
        try:
            chunk = s.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        data += chunk
    return data


def is_openai_error(obj, code=None):
    if not isinstance(obj, dict) or set(obj.keys()) != {"error"}:
        return False
    e = obj["error"]
    ok = isinstance(e, dict) and isinstance(e.get("message"), str) and isinstance(e.get("type"), str) and "code" in e
    return ok and (code is None or e["code"] == code)


def metric(text, name):
    """Value of an exact metric line `name value` (name includes labels)."""
    for ln in text.splitlines():
        if ln.startswith(name + " "):
            return float(ln.split()[-1])
    return None


def wait_workers(srv, depth, timeout=30):
    """Polls /metrics until the worker queue holds `depth` jobs; returns whether it did."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        st, h, m = srv.request("GET", "/metrics")
        if metric(m.decode(), 'celine_queue_depth{queue="workers"}') == depth:
            return True
        time.sleep(0.01)
    return False


def reward_items(n, slow=False):
    items = []
    for i in range(n):
        if slow:
            # long responses with many candidates keep a grader busy for a while
            resp = ("Let us compute step by step. " * 40) + " so the answer is \\boxed{\\frac{%d}{%d}}" % (i + 2, 4)
        else:
            resp = "so the answer is \\boxed{%d}" % i
        items.append({"id": i, "task": "math", "response": resp, "reference": str(i), "group": "g%d" % (i // 4)})
    return items


# --------------------------------------------------------------------- api

def suite_api():
    tmp = tempfile.mkdtemp(prefix="celine-e2e-")
    data = os.path.join(tmp, "data")
    os.mkdir(data)
    with open(os.path.join(data, "batch.jsonl"), "w") as f:
        f.write(json.dumps({"id": "x", "task": "math", "response": "\\boxed{9}", "reference": "9"}) + "\n")
        f.write(json.dumps({"id": "y", "task": "mcq", "response": "The answer is (C)", "reference": "C",
                            "choices": ["1", "2", "3", "4"]}) + "\n")
    with open(os.path.join(tmp, "outside.jsonl"), "w") as f:
        f.write("{}\n")
    os.symlink(os.path.join(tmp, "outside.jsonl"), os.path.join(data, "link.jsonl"))

    srv = Server("--data-dir", data, "--threads", "2")
    try:
        print("health, models")
        st, h, body = srv.json("GET", "/health")
        check(st == 200 and body == {"status": "ok", "model": False}, "GET /health is 200 without a model")
        st, h, body = srv.json("GET", "/v1/models")
        check(st == 200 and body == {"object": "list", "data": []}, "GET /v1/models lists no model")

        print("reward")
        items = [
            {"id": "a", "task": "math", "response": "x = \\boxed{\\frac{1}{2}}", "reference": "0.5", "group": "q1"},
            {"id": "b", "task": "math", "response": "The answer is 3", "reference": "0.5", "group": "q1"},
            {"id": "c", "task": "mcq", "response": "I pick B.\nAnswer: B", "reference": "B",
             "choices": ["red", "blue", "green"], "group": "q2"},
        ]
        st, h, body = srv.json("POST", "/v1/reward", {"items": items, "advantage": "grpo"})
        check(st == 200, "POST /v1/reward answers 200")
        check(body.get("rewards") == [1.0, 0.0, 1.0], "rewards graded (%s)" % body.get("rewards"))
        adv = body.get("advantages") or [0, 0, 0]
        check(abs(adv[0] - 0.7071) < 1e-3 and abs(adv[1] + 0.7071) < 1e-3 and adv[2] == 0.0,
              "GRPO advantages per group (%s)" % adv)
        check([r["id"] for r in body.get("results", [])] == ["a", "b", "c"], "results keep input order and ids")
        check(body["results"][0]["extracted"] == "\\frac{1}{2}" and body["results"][0]["source"] == "boxed",
              "results say what was extracted and from where")
        st, h, body = srv.json("POST", "/v1/reward", {"items": items, "advantage": "rloo"})
        check(st == 200 and body["advantage_mode"] == "rloo", "advantage mode rloo")
        st, h, body = srv.json("POST", "/v1/reward", {"response": "\\boxed{2}", "reference": 2})
        check(st == 200 and body["rewards"] == [1.0], "a single bare item is accepted")
        st, h, body = srv.json("POST", "/v1/reward", {"items": items, "format": "think"})
        check(st == 200 and body["rewards"] == [0.0, 0.0, 0.0], "a required format (think) is applied per request")

        print("OpenRLHF /get_reward")
        st, h, body = srv.json("POST", "/get_reward", {
            "query": ["Q: 2+3? A: the answer is 5", "Q: 2+3? A: the answer is 6"],
            "prompts": ["Q: 2+3? A:", "Q: 2+3? A:"], "labels": ["5", "5"]})
        check(st == 200 and body.get("rewards") == [1.0, 0.0], "rewards for query - prompt vs labels")

        print("data folder")
        st, h, body = srv.json("POST", "/v1/reward", {"file": "batch.jsonl"})
        check(st == 200 and body.get("rewards") == [1.0, 1.0], "items read from a file in --data-dir")
        for bad in ["../outside.jsonl", os.path.join(tmp, "outside.jsonl"), "link.jsonl", "sub/../../outside.jsonl"]:
            st, h, body = srv.json("POST", "/v1/reward", {"file": bad})
            check(st == 400 and is_openai_error(body), "file outside the data folder refused: %s" % bad)
        st, h, body = srv.json("POST", "/v1/reward", {"file": "missing.jsonl"})
        check(st == 404 and is_openai_error(body, "file_not_found"), "missing file is 404")

        print("errors in OpenAI's shape")
        st, h, body = srv.json("POST", "/v1/reward", "{not json")
        check(st == 400 and is_openai_error(body) and "not valid JSON" in body["error"]["message"], "bad JSON -> 400")
        st, h, body = srv.json("POST", "/v1/reward", {"items": [{"response": "1"}]})
        check(st == 400 and "'reference' is required" in body["error"]["message"], "missing field named")
        st, h, body = srv.json("GET", "/nowhere")
        check(st == 404 and is_openai_error(body, "not_found"), "unknown route -> 404")
        st, h, body = srv.json("GET", "/v1/reward")
        check(st == 405 and h.get("Allow") == "POST" and is_openai_error(body), "wrong method -> 405 with Allow")
        for path in ["/v1/chat/completions", "/v1/completions", "/tokenize", "/detokenize"]:
            st, h, body = srv.json("POST", path, {"messages": [{"role": "user", "content": "hi"}], "prompt": "hi"})
            check(st == 503 and is_openai_error(body, "model_not_loaded") and "--model PATH" in body["error"]["message"],
                  "%s without a model says how to load one" % path)

        print("keep-alive, pipelining, chunked bodies, Expect")
        c = srv.conn()
        for i in range(5):
            c.request("GET", "/health")
            r = c.getresponse()
            r.read()
        check(r.status == 200 and c.sock is not None, "five requests on one keep-alive connection")
        c.close()
        s = srv.sock()
        reward = json.dumps({"items": reward_items(50)}).encode()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n" +
                  b"POST /v1/reward HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(reward) + reward +
                  b"GET /nope HTTP/1.1\r\nHost: t\r\n\r\n" +
                  b"GET /v1/models HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n")
        out = recv_all(s)
        s.close()
        statuses = re.findall(rb"HTTP/1\.1 (\d{3}) ", out)
        check(statuses == [b"200", b"200", b"404", b"200"], "pipelined requests answered in order (%s)" % statuses)
        i1, i2, i3 = out.find(b'"status":"ok"'), out.find(b'"results"'), out.find(b'"not_found"')
        check(0 <= i1 < i2 < i3, "pipelined bodies in request order")
        s = srv.sock()
        body = json.dumps({"query": ["the answer is 7"], "labels": ["7"]}).encode()
        chunks = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 7]), body[i:i + 7]) for i in range(0, len(body), 7))
        s.sendall(b"POST /get_reward HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
        time.sleep(0.05)
        s.sendall(chunks)
        time.sleep(0.05)
        s.sendall(b"0\r\n\r\n")
        out = recv_all(s)
        s.close()
        check(out.startswith(b"HTTP/1.1 200") and b'"rewards":[1.0]' in out, "chunked request body")
        big = json.dumps({"items": reward_items(200)})
        r = subprocess.run(["curl", "-s", "-S", "-m", "20", "-H", "Expect: 100-continue", "-H",
                            "Content-Type: application/json", "--data-binary", big,
                            "http://127.0.0.1:%d/v1/reward" % srv.port], capture_output=True, timeout=30)
        check(r.returncode == 0 and len(json.loads(r.stdout)["rewards"]) == 200, "curl with Expect: 100-continue")

        print("metrics")
        st, h, body = srv.request("GET", "/metrics")
        text = body.decode()
        check(st == 200 and h.get("Content-Type", "").startswith("text/plain; version=0.0.4"), "GET /metrics")
        check((metric(text, 'celine_http_requests_total{route="/v1/reward",status="200"}') or 0) >= 6,
              "requests counted by route and status")
        check(metric(text, 'celine_http_requests_total{route="other",status="404"}') == 2, "unmatched paths as 'other'")
        check(metric(text, "celine_reward_items_total") is not None and metric(text, "celine_reward_items_total") >= 250,
              "reward items counted")
        for name in ["celine_time_to_first_token_seconds_count", "celine_time_per_output_token_seconds_count",
                     "celine_kv_blocks_used", "celine_prefix_cache_hits_total", 'celine_queue_depth{queue="workers"}',
                     "celine_engine_batch_sequences", "celine_prompt_tokens_total", "celine_generated_tokens_total"]:
            check(metric(text, name) is not None, "metric %s present" % name)
    finally:
        rc = srv.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    check(rc == 0, "server exits 0 on SIGTERM (rc=%s)" % rc)

    print("API key")
    srv = Server("--api-key", "k-123")
    try:
        st, h, body = srv.json("GET", "/health")
        check(st == 200, "/health needs no key")
        st, h, body = srv.json("POST", "/v1/reward", {"response": "1", "reference": "1"})
        check(st == 401 and is_openai_error(body, "invalid_api_key") and h.get("WWW-Authenticate") == "Bearer",
              "no key -> 401")
        st, h, body = srv.json("GET", "/metrics", headers={"Authorization": "Bearer k-12"})
        check(st == 401, "wrong key -> 401")
        st, h, body = srv.json("POST", "/v1/reward", {"response": "1", "reference": "1"},
                               headers={"Authorization": "Bearer k-123"})
        check(st == 200, "right key -> 200")
        st, h, body = srv.json("GET", "/v1/models", headers={"Authorization": "Bearer k-123"})
        check(st == 200, "right key on /v1/models")
    finally:
        check(srv.stop() == 0, "exit 0")
    env = dict(os.environ, CELINE_API_KEY="from-env")
    srv = Server(env=env)
    try:
        st, h, body = srv.json("GET", "/metrics")
        check(st == 401, "$CELINE_API_KEY sets the key")
    finally:
        srv.stop()

    print("binding")
    r = subprocess.run([CELINE, "serve", "--host", "example.com", "--port", "0"], capture_output=True, timeout=30)
    check(r.returncode != 0 and b"not an IP address" in r.stderr, "a host name is refused with a clear message")
    r = subprocess.run([CELINE, "serve", "--model", "/nonexistent.gguf", "--port", "0"], capture_output=True,
                       timeout=30)
    check(r.returncode != 0 and b"does not exist" in r.stderr, "a missing model path is refused at start")
    r = subprocess.run([CELINE, "serve", "--model", os.path.join(SRC, "tests", "data", "models", "README.md"),
                        "--port", "0"], capture_output=True, timeout=60)
    check(r.returncode == 1 and b"failed to load" in r.stderr, "a file that is not a model: exit 1 with the reason")


# ------------------------------------------------------------------ limits

def suite_limits():
    srv = Server("--max-header-bytes", "1024", "--max-body-bytes", "4096", "--header-timeout-ms", "400",
                 "--body-timeout-ms", "400", "--idle-timeout-ms", "500")
    try:
        print("431 header size")
        s = srv.sock()
        s.sendall(b"GET /health HTTP/1.1\r\nX-Fill: " + b"a" * 2000 + b"\r\n\r\n")
        out = recv_all(s)
        s.close()
        check(out.startswith(b"HTTP/1.1 431 ") and b"Connection: close" in out and b'"header_too_large"' in out,
              "oversized headers -> 431 and close")
        print("413 body size")
        st, h, body = srv.json("POST", "/v1/reward", "x" * 5000)
        check(st == 413 and is_openai_error(body, "body_too_large"), "Content-Length over the cap -> 413")
        s = srv.sock()
        s.sendall(b"POST /v1/reward HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(6):
            s.sendall(b"400\r\n" + b"y" * 1024 + b"\r\n")
        out = recv_all(s)
        s.close()
        check(out.startswith(b"HTTP/1.1 413 "), "chunked body over the cap -> 413")
        print("408 slow senders")
        s = srv.sock()
        t0 = time.time()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: slow\r\n")
        out = recv_all(s, idle=3.0)
        dt = time.time() - t0
        s.close()
        check(out.startswith(b"HTTP/1.1 408 ") and b'"request_timeout"' in out and 0.3 < dt < 2.5,
              "headers not finished in time -> 408 (%.2fs)" % dt)
        s = srv.sock()
        t0 = time.time()
        for part in [b"GET /hea", b"lth HTTP/1.1\r\n", b"Host: x\r\n"]:  # dribbling does not extend the deadline
            s.sendall(part)
            time.sleep(0.15)
        out = recv_all(s, idle=3.0)
        s.close()
        check(out.startswith(b"HTTP/1.1 408 "), "dribbled headers still time out -> 408")
        s = srv.sock()
        s.sendall(b"POST /v1/reward HTTP/1.1\r\nContent-Length: 100\r\n\r\n{\"items\":")
        out = recv_all(s, idle=3.0)
        s.close()
        check(out.startswith(b"HTTP/1.1 408 "), "body not finished in time -> 408")
        print("idle keep-alive timeout")
        s = srv.sock()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        first = recv_until(s, b'"model":false}')
        t0 = time.time()
        rest = recv_all(s, idle=3.0)  # returns at EOF
        dt = time.time() - t0
        s.close()
        check(first.startswith(b"HTTP/1.1 200") and rest == b"" and 0.3 < dt < 2.5,
              "idle keep-alive connection closed by the server (%.2fs)" % dt)
        s = srv.sock()
        t0 = time.time()
        rest = recv_all(s, idle=3.0)
        dt = time.time() - t0
        s.close()
        check(rest == b"" and dt < 2.5, "a connection that never sends is closed (%.2fs)" % dt)

    finally:
        check(srv.stop() == 0, "exit 0")

    print("503 connection cap")
    srv = Server("--max-connections", "4")
    try:
        held = [srv.sock() for _ in range(4)]
        for h_ in held:  # make sure the server has accepted them (each answers a request)
            h_.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
            recv_until(h_, b'"model":false}')
        s = srv.sock()
        s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        out = recv_all(s)
        s.close()
        check(out.startswith(b"HTTP/1.1 503 ") and b"Retry-After: 1" in out and b'"too_many_connections"' in out,
              "connection over the cap -> 503")
        for h_ in held:
            h_.close()
        deadline = time.time() + 10  # the server sees the closes asynchronously
        st = 0
        while time.time() < deadline and st != 200:
            st, h, body = srv.json("GET", "/health")
            if st != 200:
                time.sleep(0.05)
        check(st == 200, "capacity returns once connections close")
    finally:
        check(srv.stop() == 0, "exit 0")

    print("429 when the worker queue is full")
    srv = Server("--threads", "1", "--max-queue", "1")
    try:
        big = json.dumps({"items": reward_items(20000, slow=True)}).encode()  # ~0.5 s of grading
        result = {}

        def post():
            try:
                result["r"] = srv.request("POST", "/v1/reward", big, {"Content-Type": "application/json"}, timeout=120)
            except Exception as e:  # noqa: BLE001 - recorded, the check below reports it
                result["e"] = e

        t = threading.Thread(target=post)
        t.start()
        busy = wait_workers(srv, 1)
        st, h, body = srv.json("POST", "/v1/reward", {"response": "1", "reference": "1"})
        t.join(timeout=180)
        check(busy and st == 429 and h.get("Retry-After") == "1" and is_openai_error(body, "queue_full"),
              "a full worker queue answers 429 with Retry-After (%s)" % st)
        r = result.get("r")
        check(r is not None and r[0] == 200, "the queued request itself completes")
        st, h, body = srv.json("POST", "/v1/reward", {"response": "1", "reference": "1"})
        check(st == 200, "the queue drains and accepts again")
        st, h, m = srv.request("GET", "/metrics")
        check(metric(m.decode(), "celine_queue_rejections_total") == 1, "the rejection is counted")
    finally:
        check(srv.stop() == 0, "exit 0")


# ---------------------------------------------------------------- shutdown

def suite_shutdown():
    print("SIGTERM with a request in flight")
    srv = Server("--threads", "1")
    big = json.dumps({"items": reward_items(20000, slow=True)}).encode()
    result = {}

    def post():
        try:
            result["r"] = srv.request("POST", "/v1/reward", big, {"Content-Type": "application/json"}, timeout=120)
        except Exception as e:  # noqa: BLE001
            result["e"] = e

    t = threading.Thread(target=post)
    t.start()
    busy = wait_workers(srv, 1)  # the request is being graded
    idle = srv.sock()  # an idle keep-alive connection must not hold the shutdown
    t0 = time.time()
    srv.proc.send_signal(signal.SIGTERM)
    time.sleep(0.2)
    refused = False
    try:
        socket.create_connection(("127.0.0.1", srv.port), timeout=2).close()
    except OSError:
        refused = True
    check(refused, "no new connections after SIGTERM")
    t.join(timeout=120)
    rc = srv.stop(sig=None, timeout=60)  # already signalled: just wait
    dt = time.time() - t0
    idle.close()
    r = result.get("r")
    check(busy, "the request was in flight when the signal came")
    check(r is not None and r[0] == 200 and len(json.loads(r[2])["rewards"]) == 20000,
          "the in-flight request is finished and answered (%s)" % (r[0] if r else result.get("e")))
    check(rc == 0 and dt < 60, "exit 0 after finishing (rc=%s, %.1fs)" % (rc, dt))

    print("SIGINT when idle")
    srv = Server()
    c = srv.conn()
    c.request("GET", "/health")
    c.getresponse().read()  # leaves an idle keep-alive connection open
    t0 = time.time()
    rc = srv.stop(signal.SIGINT)
    check(rc == 0 and time.time() - t0 < 5, "SIGINT: exit 0 promptly with an idle connection open")
    c.close()

    print("client disconnect mid-request")
    srv = Server("--threads", "1")
    try:
        for _ in range(3):
            s = srv.sock()
            s.sendall(b"POST /v1/reward HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(big) + big)
            s.close()  # gone before the answer
        s = srv.sock()
        s.sendall(b"POST /v1/reward HTTP/1.1\r\nContent-Length: %d\r\n\r\n" % len(big) + big[:1000])
        s.close()  # gone mid-body
        st, h, body = srv.json("POST", "/v1/reward", {"response": "1", "reference": "1"}, timeout=120)
        check(st == 200, "the server keeps serving after clients vanish")
        deadline = time.time() + 60
        while time.time() < deadline:
            st, h, m = srv.request("GET", "/metrics")
            if metric(m.decode(), 'celine_queue_depth{queue="workers"}') == 0:
                break
            time.sleep(0.2)
        text = m.decode()
        check(metric(text, 'celine_queue_depth{queue="workers"}') == 0, "abandoned work drains")
        check(metric(text, "celine_http_connections") == 1, "only this connection is open (%s)" %
              metric(text, "celine_http_connections"))
    finally:
        check(srv.stop() == 0, "exit 0")

# ---------------------------------------------------------------- generate

MODEL = os.path.join(SRC, "tests", "data", "models", "qwen2-q8_0.gguf")


def need_model():
    if os.path.exists(MODEL):
        return True
    if os.environ.get("CI") == "true" or os.environ.get("CELINE_REQUIRE_FIXTURES") == "1":
        check(False, "test model %s exists" % MODEL)
        return False
    print("SKIP: %s is missing" % MODEL)
    return False


def sse_events(raw):
    """The `data:` payloads of an SSE body, in order."""
    out = []
    for block in raw.decode("utf-8", errors="replace").split("\n\n"):
        for ln in block.split("\n"):
            if ln.startswith("data: "):
                out.append(ln[6:])
    return out


def stream_post(srv, path, body, timeout=60):
    c = srv.conn(timeout)
    c.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
    r = c.getresponse()
    data = r.read()  # http.client undoes the chunked coding
    c.close()
    return r.status, dict(r.getheaders()), data


def gauge(srv, name):
    st, h, m = srv.request("GET", "/metrics")
    return metric(m.decode(), name)


def wait_gauge(srv, name, value, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if gauge(srv, name) == value:
            return True
        time.sleep(0.05)
    return False


def suite_generate():
    if not need_model():
        return
    srv = Server("--model", MODEL, "--max-n", "8", "--max-write-bytes", "4096")
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            st, h, body = srv.json("GET", "/health")
            if st == 200:
                break
            check(st == 503 and body.get("status") == "loading", "503 'loading' until the model is ready")
            time.sleep(0.05)
        check(st == 200 and body == {"status": "ok", "model": True}, "GET /health 200 once the model is ready")
        st, h, body = srv.json("GET", "/v1/models")
        check(st == 200 and body["data"][0]["id"] == "qwen2-q8_0", "GET /v1/models names the model")

        print("chat, non-streaming, n > 1")
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello there"}]
        req = {"messages": msgs, "max_tokens": 7, "n": 3, "seed": 11, "temperature": 0.9, "ignore_eos": True}
        st, h, body = srv.json("POST", "/v1/chat/completions", req)
        check(st == 200 and body["object"] == "chat.completion" and len(body["choices"]) == 3, "n = 3 choices")
        check([c["index"] for c in body["choices"]] == [0, 1, 2], "choice indices")
        check(all(c["finish_reason"] == "length" and c["message"]["role"] == "assistant" for c in body["choices"]),
              "each choice ends by length")
        u = body["usage"]
        check(u["completion_tokens"] == 21 and u["total_tokens"] == u["prompt_tokens"] + 21 and u["prompt_tokens"] > 5,
              "usage counts prompt and 3 x 7 generated tokens (%s)" % u)
        st2, h2, body2 = srv.json("POST", "/v1/chat/completions", req)
        check([c["message"]["content"] for c in body2["choices"]] == [c["message"]["content"] for c in body["choices"]],
              "the same seed gives the same samples")

        print("chat, streaming (SSE)")
        sreq = dict(req, n=1, stream=True, stream_options={"include_usage": True})
        st, h, raw = stream_post(srv, "/v1/chat/completions", sreq)
        ev = sse_events(raw)
        check(st == 200 and h.get("Content-Type") == "text/event-stream" and h.get("Transfer-Encoding") == "chunked",
              "SSE response over chunked transfer coding")
        check(len(ev) >= 3 and ev[-1] == "[DONE]", "the stream ends with data: [DONE]")
        chunks = [json.loads(e) for e in ev[:-1]]
        check(all(c["object"] == "chat.completion.chunk" for c in chunks), "chunks are chat.completion.chunk")
        check(chunks[0]["choices"][0]["delta"].get("role") == "assistant", "the first delta carries the role")
        text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks if c["choices"])
        fin = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
        check(fin == ["length"], "one finish_reason at the end (%s)" % fin)
        check(chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] == 7,
              "a last chunk carries usage")
        st, h, one = srv.json("POST", "/v1/chat/completions", dict(req, n=1))
        check(text == one["choices"][0]["message"]["content"], "streamed text equals the non-streamed text")

        print("stop strings, max_tokens, logprobs")
        base = {"prompt": "Once upon a time", "max_tokens": 24, "seed": 7, "temperature": 1.0, "ignore_eos": True}
        st, h, full = srv.json("POST", "/v1/completions", base)
        ftext = full["choices"][0]["text"]
        check(st == 200 and full["choices"][0]["finish_reason"] == "length" and full["usage"]["completion_tokens"] == 24,
              "max_tokens stops with 'length'")
        # a character whose first occurrence is not at the start, so the cut text is not empty
        stop = next((ch for i, ch in enumerate(ftext) if i > 0 and ftext.find(ch) == i and ch.isascii() and
                     ch.isprintable() and ch != " "), None) or ftext[len(ftext) // 2]
        st, h, cut = srv.json("POST", "/v1/completions", dict(base, stop=[stop, "@@never@@"]))
        want = ftext[:ftext.find(stop)]
        check(st == 200 and cut["choices"][0]["finish_reason"] == "stop" and cut["choices"][0]["text"] == want,
              "stop string %r cuts the text before it (%r)" % (stop, cut["choices"][0]["text"]))
        st, h, lp = srv.json("POST", "/v1/chat/completions", dict(req, n=1, max_tokens=5, logprobs=True, top_logprobs=3))
        content = (lp["choices"][0].get("logprobs") or {}).get("content") or []
        check(st == 200 and len(content) == 5 and all(len(t["top_logprobs"]) == 3 and t["logprob"] <= 0 for t in content),
              "chat logprobs: one entry per token with 3 alternatives")
        st, h, lp = srv.json("POST", "/v1/completions", dict(base, max_tokens=4, logprobs=2))
        l = lp["choices"][0]["logprobs"]
        check(len(l["tokens"]) == 4 and len(l["token_logprobs"]) == 4 and len(l["top_logprobs"]) == 4,
              "completion logprobs: parallel arrays")

        print("prefix cache")
        hits = gauge(srv, "celine_prefix_cache_hits_total")
        long_prompt = {"prompt": "The quick brown fox jumps over the lazy dog. " * 12, "max_tokens": 2}
        srv.json("POST", "/v1/completions", long_prompt)
        st, h, again = srv.json("POST", "/v1/completions", long_prompt)
        cached = again["usage"]["prompt_tokens_details"]["cached_tokens"]
        check(st == 200 and cached > 0, "a repeated prompt is served from the prefix cache (%d tokens)" % cached)
        check(gauge(srv, "celine_prefix_cache_hits_total") >= hits + 1, "prefix-cache hits counted in /metrics")

        print("tokenize / detokenize")
        st, h, tk = srv.json("POST", "/tokenize", {"content": "Hello world", "add_special": False})
        check(st == 200 and tk["count"] == len(tk["tokens"]) > 0, "POST /tokenize")
        st, h, dt = srv.json("POST", "/detokenize", {"tokens": tk["tokens"]})
        check(st == 200 and dt["content"] == "Hello world", "POST /detokenize round-trips")
        st, h, tm = srv.json("POST", "/tokenize", {"messages": msgs})
        check(st == 200 and tm["count"] > tk["count"], "tokenize renders chat messages")
        st, h, body = srv.json("POST", "/detokenize", {"tokens": [10 ** 9]})
        check(st == 400 and is_openai_error(body), "an unknown token id -> 400")

        print("request errors")
        for bad, why in [({"messages": msgs, "n": 9}, "'n' is 9"),
                         ({"messages": msgs, "temperature": -1}, "'temperature'"),
                         ({"messages": msgs, "max_tokens": 10 ** 7}, "'max_tokens'"),
                         ({"messages": [{"role": "robot", "content": "x"}]}, "role 'robot'"),
                         ({"messages": []}, "'messages'"),
                         ({"messages": msgs, "stop": [1, 2]}, "'stop'"),
                         ({"messages": msgs, "top_logprobs": 3}, "needs 'logprobs'")]:
            st, h, body = srv.json("POST", "/v1/chat/completions", bad)
            check(st == 400 and is_openai_error(body) and why in body["error"]["message"],
                  "400 naming %s (%s)" % (why, body.get("error", {}).get("message") if isinstance(body, dict) else body))
        st, h, body = srv.json("POST", "/v1/completions", {"prompt": "x " * 5000, "max_tokens": 2})
        check(st == 400 and is_openai_error(body, "context_length_exceeded"), "a prompt over the context -> 400")
        st, h, body = srv.json("POST", "/v1/completions", {"prompt": [1, 2, 99999]})
        check(st == 400 and "not a token id" in body["error"]["message"], "prompt token ids are checked")

        print("concurrent streams")
        outs = []

        def one_stream(i):
            try:
                st, h, raw = stream_post(srv, "/v1/chat/completions", {
                    "messages": [{"role": "user", "content": "Hello number %d" % i}], "n": 2, "max_tokens": 20,
                    "ignore_eos": True, "seed": i, "stream": True, "stream_options": {"include_usage": True}})
                outs.append((st, sse_events(raw)))
            except Exception as e:  # noqa: BLE001 - reported by the check below
                outs.append((0, [repr(e)]))

        threads = [threading.Thread(target=one_stream, args=(i,)) for i in range(32)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        good = 0
        for st, ev in outs:
            if st != 200 or not ev or ev[-1] != "[DONE]":
                continue
            chunks = [json.loads(e) for e in ev[:-1]]
            fins = {c["choices"][0]["index"]: c["choices"][0]["finish_reason"] for c in chunks
                    if c["choices"] and c["choices"][0]["finish_reason"]}
            if fins == {0: "length", 1: "length"} and chunks[-1]["usage"]["completion_tokens"] == 40:
                good += 1
        check(good == 32, "32 concurrent streams (n = 2) all complete with usage and [DONE] (%d)" % good)
        check(wait_gauge(srv, "celine_generations_in_flight", 0) and wait_gauge(srv, "celine_kv_blocks_used", 0),
              "nothing left in flight, no KV blocks held")

        print("client disconnect mid-stream")
        before = gauge(srv, "celine_generation_cancelled_total")
        s = srv.sock()
        body = json.dumps({"prompt": "Tell me", "max_tokens": 3000, "ignore_eos": True, "stream": True}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        got = recv_until(s, b"data: ", timeout=30)
        check(b"data: " in got, "the stream started")
        check(gauge(srv, "celine_generations_in_flight") == 1, "one generation in flight")
        s.close()
        check(wait_gauge(srv, "celine_generations_in_flight", 0), "the generation stops when the client goes")
        check(gauge(srv, "celine_generation_cancelled_total") == before + 1, "counted as cancelled")
        check(wait_gauge(srv, "celine_kv_blocks_used", 0), "its KV blocks are freed")
        gen_total = gauge(srv, "celine_generated_tokens_total")
        time.sleep(0.3)
        check(gauge(srv, "celine_generated_tokens_total") == gen_total, "no tokens are generated after the cancel")

        print("a streaming client that does not read is dropped")
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
        s.connect(("127.0.0.1", srv.port))
        # 8 samples x 4000 tokens with logprobs: far more than loopback socket buffers hold
        body = json.dumps({"prompt": "Go", "max_tokens": 4000, "n": 8, "ignore_eos": True, "stream": True,
                           "logprobs": 5}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        dropped = wait_gauge(srv, "celine_http_slow_clients_dropped_total", 1, timeout=60)
        check(dropped, "the slow reader is dropped at --max-write-bytes")
        check(wait_gauge(srv, "celine_generations_in_flight", 0), "and its generation is cancelled")
        s.close()
        st, h, body = srv.json("GET", "/health")
        check(st == 200, "the server is fine afterwards")
        st, h, m = srv.request("GET", "/metrics")
        text = m.decode()
        check((metric(text, "celine_time_to_first_token_seconds_count") or 0) >= 5 and
              (metric(text, "celine_time_per_output_token_seconds_count") or 0) > 20, "latency histograms filled")
        check((metric(text, "celine_prompt_tokens_total") or 0) > 0 and (metric(text, "celine_generated_tokens_total") or 0) > 100,
              "token counters")
    finally:
        check(srv.stop() == 0, "exit 0")

    print("429 when the engine's queue is full")
    srv = Server("--model", MODEL, "--max-seqs", "1", "--engine-queue", "1")
    socks = []
    try:
        deadline = time.time() + 60
        while time.time() < deadline and srv.json("GET", "/health")[0] != 200:
            time.sleep(0.05)
        body = json.dumps({"prompt": "Tell me", "max_tokens": 4000, "ignore_eos": True, "stream": True}).encode()
        for _ in range(2):  # one runs (max-seqs 1), one waits in the engine's queue
            s = srv.sock()
            s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
            socks.append(s)
            time.sleep(0.02)  # the running stream lasts well under a second on a quiet machine
        queued = wait_gauge(srv, 'celine_queue_depth{queue="engine"}', 1)
        st, h, body = srv.json("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
        check(queued and st == 429 and h.get("Retry-After") == "1" and is_openai_error(body, "engine_queue_full"),
              "a full engine queue answers 429 with Retry-After (%s)" % st)
        for s in socks:
            s.close()
        check(wait_gauge(srv, "celine_generations_in_flight", 0), "closing the clients cancels both")
        st, h, body = srv.json("POST", "/v1/completions", {"prompt": "x", "max_tokens": 2})
        check(st == 200, "the engine accepts again")
    finally:
        for s in socks:
            s.close()
        check(srv.stop() == 0, "exit 0")

    print("SIGTERM during a long stream: grace, then cancel")
    srv = Server("--model", MODEL, "--shutdown-grace-ms", "500")
    try:
        wait_health = time.time() + 60
        while time.time() < wait_health and srv.json("GET", "/health")[0] != 200:
            time.sleep(0.05)
        s = srv.sock()
        # 8 samples: long enough to outlast the 500 ms grace on a fast, quiet machine
        body = json.dumps({"prompt": "Tell me", "max_tokens": 4000, "n": 8, "ignore_eos": True, "stream": True}).encode()
        s.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: t\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        recv_until(s, b"data: ", timeout=30)
        t0 = time.time()
        srv.proc.send_signal(signal.SIGTERM)
        rest = recv_all(s, limit=1 << 26, idle=10)
        s.close()
        rc = srv.stop(sig=None, timeout=30)  # already signalled: just wait
        check(b'"finish_reason":"cancelled"' in rest and b"data: [DONE]" in rest, "the stream ends cleanly, cancelled")
        check(rc == 0 and time.time() - t0 < 10, "exit 0 after the grace period (%.1fs)" % (time.time() - t0))
    finally:
        srv.stop()


def suite_openai_client():
    if not need_model():
        return
    pkg = os.path.join(SRC, ".fixtures", "node_modules", "openai")
    if not os.path.exists(os.path.join(pkg, "package.json")):
        if os.environ.get("CI") == "true" or os.environ.get("CELINE_REQUIRE_FIXTURES") == "1":
            check(False, "the openai npm package is installed (scripts/fixtures-server.sh)")
            return
        print("SKIP: run scripts/fixtures-server.sh to install the openai npm package")
        return
    srv = Server("--model", MODEL, "--api-key", "sk-test")
    try:
        deadline = time.time() + 60
        while time.time() < deadline and srv.json("GET", "/health")[0] != 200:
            time.sleep(0.05)
        r = subprocess.run(["node", os.path.join(os.path.dirname(os.path.abspath(__file__)), "openai_client.cjs"),
                            "http://127.0.0.1:%d" % srv.port, "sk-test", pkg], capture_output=True, timeout=300)
        sys.stdout.write(r.stdout.decode())
        sys.stdout.write(r.stderr.decode())
        check(r.returncode == 0, "the openai npm client passes its checks")
    finally:
        check(srv.stop() == 0, "exit 0")



def main():
    suite = sys.argv[1] if len(sys.argv) > 1 else "api"
    {"api": suite_api, "limits": suite_limits, "shutdown": suite_shutdown, "generate": suite_generate,
     "openai_client": suite_openai_client}[suite]()
    if failures:
        print("%d check(s) failed:" % len(failures))
        for f in failures:
            print("  - " + f)
        sys.exit(1)
    print("all checks passed")


if __name__ == "__main__":
    main()
