#!/usr/bin/env python3
"""A tiny fake OpenAI-compatible server for celine's generator tests.

POST /v1/chat/completions and /v1/completions answer with deterministic text
derived from the prompt (well-formed MIND dialogues, Nemotron-CC rephrasings,
CrossThink items, boxed answers), so pipelines can run end to end without a
model. Faults are injected from a plan: each incoming generation request takes
the next entry of --plan (comma-separated), then "ok" once the plan is spent
(or the plan repeats with --cycle):

  ok      normal answer            429    HTTP 429 (error JSON)
  429ra   HTTP 429 + Retry-After: 0    500 / 503   HTTP 5xx
  400     HTTP 400 (not retryable)      drop   close the connection, no reply
  hang    sleep --hang-s, then answer   slow   sleep --slow-s, then answer
  big     a body larger than 20 MiB     badjson  HTTP 200 with a non-JSON body
  length  answer with finish_reason "length"

GET /stats returns {"requests", "max_inflight", "auth": [...]}; every request
is also appended to --log as one JSON line. The chosen port is printed on
stdout ("PORT <n>") once listening.
"""
import argparse
import json
import re
import socket
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STATE = {"n": 0, "inflight": 0, "max_inflight": 0, "auth": []}
LOCK = threading.Lock()
ARGS = None


def take_action():
    with LOCK:
        i = STATE["n"]
        STATE["n"] += 1
        plan = ARGS.plan
        if plan:
            if ARGS.cycle:
                return plan[i % len(plan)], i
            if i < len(plan):
                return plan[i], i
        return "ok", i


def words(s):
    return len(s.split())


VARIED = [
    "could you walk me through the first statement of this passage and why it is true",
    "certainly, we begin with the definition it gives and substitute the known values one at a time",
    "so once the values are substituted we simplify both sides and compare what remains, correct",
    "yes, and when the two sides agree the result follows directly from the assumptions stated there",
    "what happens to the second computation if we follow the same procedure carefully",
    "the second computation uses the identical method, only the numbers change as the text shows",
]


def mind_reply(prompt, seed):
    m = re.search(r'\("([^"]+):" or "([^"]+):"\)', prompt)
    a, b = (m.group(1), m.group(2)) if m else ("Speaker 1", "Speaker 2")
    first = a
    m2 = re.search(r"([^,.\n]+?) speaks first", prompt)
    if m2 and m2.group(1).strip() == b:
        first = b
    other = b if first == a else a
    lines = []
    for t in range(4):
        who = first if t % 2 == 0 else other
        lines.append("%s: (%d) %s" % (who, seed % 997, VARIED[(seed + t) % len(VARIED)]))
    return "\n".join(lines)


def rephrase_reply(prompt, seed):
    m = re.search(r'Start your reply with the line "([^"]+)"', prompt)
    body = "The material explains a method in clear terms, gives its main definitions, and works through the example " \
           "it presents, keeping every number and name that the original text mentioned, variant %d. It then " \
           "restates the central result, shows how each step follows from the previous one, and closes with the " \
           "consequences that the original discussion draws for related questions." % (seed % 1000)
    if m:
        return m.group(1) + "\n" + body
    if "question-answer pairs" in prompt:
        return "\n\n".join("Question: What does part %d of the text establish?\nAnswer: It establishes fact %d as "
                           "stated, variant %d." % (i, i, seed % 1000) for i in range(6))
    if "List the facts" in prompt:
        return "\n".join("- Fact number %d from the text holds as written there, variant %d." % (i, seed % 1000)
                         for i in range(6))
    return body


def qa_reply(prompt, seed):
    n = 3
    m = re.search(r"Write (\d+) ", prompt)
    if m:
        n = int(m.group(1))
    out = []
    if "multiple-choice" in prompt:
        for i in range(n):
            gold = "ABCD"[(seed + i) % 4]
            out.append("Question: Which value does quantity %d take in case %d?\nA) %d\nB) %d\nC) %d\nD) %d\n"
                       "Answer: %s" % (i, seed % 101, i, i + 1, i + 2, i + 3, gold))
        out.append("Question: A broken item?\nA) x\nB) y\nAnswer: Q")
    else:
        for i in range(n):
            out.append("Question: What is the value of quantity %d in case %d?\nAnswer: %d" % (i, seed % 101, i * 7))
        out.append("Question: Explain everything in detail?\nAnswer: " + " ".join(["word"] * 14))
    return "\n\n".join(out)


def reply_for(prompt, seed):
    if "conversation" in prompt and ":\" or \"" in prompt:
        return mind_reply(prompt, seed)
    if "\\boxed{" in prompt:
        return "Let me think step by step. The answer is \\boxed{%s}" % ("B" if "A)" in prompt else "7")
    if "multiple-choice questions based on" in prompt or "open-ended questions based on" in prompt:
        return qa_reply(prompt, seed)
    if "Text:" in prompt:
        return rephrase_reply(prompt, seed)
    return "ok %d" % (seed % 1000)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *a):
        pass

    def send_json(self, code, obj, extra=None):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        if self.path == "/stats":
            with LOCK:
                self.send_json(200, {"requests": STATE["n"], "max_inflight": STATE["max_inflight"],
                                     "auth": STATE["auth"][-20:]})
        else:
            self.send_json(404, {"error": {"message": "no such path", "type": "invalid_request_error"}})

    def do_POST(self):
        n = int(self.headers.get("Content-Length", "0"))
        raw = self.rfile.read(n)
        if self.path not in ("/v1/chat/completions", "/v1/completions"):
            self.send_json(404, {"error": {"message": "no such path " + self.path, "type": "invalid_request_error"}})
            return
        action, idx = take_action()
        with LOCK:
            STATE["inflight"] += 1
            STATE["max_inflight"] = max(STATE["max_inflight"], STATE["inflight"])
            STATE["auth"].append(self.headers.get("Authorization", ""))
        try:
            self.handle_gen(raw, action, idx)
        finally:
            with LOCK:
                STATE["inflight"] -= 1

    def handle_gen(self, raw, action, idx):
        try:
            req = json.loads(raw)
        except Exception:
            self.send_json(400, {"error": {"message": "body is not JSON", "type": "invalid_request_error"}})
            return
        if ARGS.log:
            with LOCK, open(ARGS.log, "a") as f:
                f.write(json.dumps({"i": idx, "path": self.path, "action": action, "port": ARGS.port_used,
                                    "req": req}) + "\n")
        if action == "drop":
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        if action in ("429", "429ra"):
            extra = {"Retry-After": "0"} if action == "429ra" else None
            self.send_json(429, {"error": {"message": "rate limited (injected)", "type": "rate_limit"}}, extra)
            return
        if action in ("500", "503"):
            self.send_json(int(action), {"error": {"message": "server error (injected)", "type": "server_error"}})
            return
        if action == "400":
            self.send_json(400, {"error": {"message": "bad request (injected)", "type": "invalid_request_error"}})
            return
        if action == "hang":
            time.sleep(ARGS.hang_s)
        if action == "slow":
            time.sleep(ARGS.slow_s)
        if action == "badjson":
            body = b"<html>not json</html>"
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        if action == "big":
            body = b'{"choices":[{"text":"' + b"x" * (21 << 20) + b'"}]}'
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            try:
                self.wfile.write(body)
            except Exception:
                pass
            return
        if "messages" in req:
            prompt = "\n".join(m.get("content", "") for m in req["messages"])
        else:
            prompt = req.get("prompt", "")
        seed = int(req.get("seed", 0) or 0)
        text = reply_for(prompt, seed)
        fin = "length" if action == "length" else "stop"
        choice = {"index": 0, "finish_reason": fin}
        if self.path == "/v1/chat/completions":
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        self.send_json(200, {"id": "fake-%d" % idx, "object": "chat.completion", "model": req.get("model", "fake"),
                             "choices": [choice],
                             "usage": {"prompt_tokens": words(prompt), "completion_tokens": words(text),
                                       "total_tokens": words(prompt) + words(text)}})


def main():
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--plan", default="")
    ap.add_argument("--cycle", action="store_true")
    ap.add_argument("--log", default="")
    ap.add_argument("--hang-s", type=float, default=3.0)
    ap.add_argument("--slow-s", type=float, default=0.3)
    ARGS = ap.parse_args()
    ARGS.plan = [p for p in ARGS.plan.split(",") if p]
    srv = ThreadingHTTPServer(("127.0.0.1", ARGS.port), Handler)
    srv.daemon_threads = True
    ARGS.port_used = srv.server_address[1]
    print("PORT %d" % ARGS.port_used, flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
