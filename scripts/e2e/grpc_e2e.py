#!/usr/bin/env python3
"""End-to-end gRPC through Portcullis with a real grpcio server and client.

No protoc: the service `e2e.Echo` is registered with grpcio's generic
handlers and messages are raw bytes (identity serializers), or small JSON
documents for the control messages.

    grpc_e2e.py server --port-file F          # start the upstream service
    grpc_e2e.py client --gateway H:P [--web H:P]

Run by scripts/e2e/grpc.sh, which also starts the gateway.
"""

import argparse
import base64
import concurrent.futures
import http.client
import json
import os
import signal
import struct
import sys
import threading
import time
import urllib.parse

import grpc

SERVICE = "e2e.Echo"
MAX_MSG = 16 * 1024 * 1024
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MSG),
    ("grpc.max_receive_message_length", MAX_MSG),
]

# What Fail answers with, and what the client expects to see.
FAIL_CODE = grpc.StatusCode.FAILED_PRECONDITION  # 9
FAIL_DETAILS = "bucket 'e2e' is frozen: 100% full, ünïcode ok"
FAIL_TRAILERS = (("x-e2e-reason", "frozen-bucket"), ("x-e2e-detail-bin", b"\x00\x01\xfe\xff"))

SERVER_STREAM_N = 7
SLOW_SLEEP = 5.0


def ident(b):
    return b


# --------------------------------------------------------------------------
# Server
# --------------------------------------------------------------------------

class Stats:
    lock = threading.Lock()
    slow = {}


def h_unary(request, context):
    md = dict(context.invocation_metadata())
    echo = md.get("x-e2e-req")
    if echo is not None:
        context.send_initial_metadata((("x-e2e-echo", echo),))
        context.set_trailing_metadata((("x-e2e-trail", "unary-" + echo),))
    return request


def h_server_stream(request, context):
    req = json.loads(request or b"{}")
    n = int(req.get("n", SERVER_STREAM_N))
    fail_after = req.get("fail_after")
    for i in range(n):
        if fail_after is not None and i == fail_after:
            context.set_trailing_metadata(FAIL_TRAILERS)
            context.abort(FAIL_CODE, FAIL_DETAILS)
        yield ("msg-%d" % i).encode()


def h_client_stream(request_iterator, context):
    count = 0
    parts = []
    for msg in request_iterator:
        count += 1
        parts.append(msg)
    return json.dumps({"count": count, "joined": b"".join(parts).decode("latin-1")}).encode()


def h_bidi(request_iterator, context):
    for msg in request_iterator:
        yield b"echo:" + msg


def h_fail(request, context):
    context.set_trailing_metadata(FAIL_TRAILERS)
    context.abort(FAIL_CODE, FAIL_DETAILS)


def h_slow(request, context):
    remaining = context.time_remaining()
    start = time.monotonic()
    while context.is_active() and time.monotonic() - start < SLOW_SLEEP:
        time.sleep(0.02)
    with Stats.lock:
        Stats.slow[request.decode("latin-1")] = {
            "time_remaining_at_start": remaining,
            "active_for": time.monotonic() - start,
            "cancelled": not context.is_active(),
        }
    return b"too late"


def h_stats(request, context):
    with Stats.lock:
        return json.dumps({"slow": Stats.slow}).encode()


def run_server(args):
    handlers = {
        "Unary": grpc.unary_unary_rpc_method_handler(h_unary, ident, ident),
        "ServerStream": grpc.unary_stream_rpc_method_handler(h_server_stream, ident, ident),
        "ClientStream": grpc.stream_unary_rpc_method_handler(h_client_stream, ident, ident),
        "Bidi": grpc.stream_stream_rpc_method_handler(h_bidi, ident, ident),
        "Fail": grpc.unary_unary_rpc_method_handler(h_fail, ident, ident),
        "Slow": grpc.unary_unary_rpc_method_handler(h_slow, ident, ident),
        "Stats": grpc.unary_unary_rpc_method_handler(h_stats, ident, ident),
    }
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=80),
        handlers=[grpc.method_handlers_generic_handler(SERVICE, handlers)],
        options=GRPC_OPTIONS + [("grpc.so_reuseport", 0)],
        maximum_concurrent_rpcs=None,
    )
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    tmp = args.port_file + ".tmp"
    with open(tmp, "w") as f:
        f.write(str(port))
    os.replace(tmp, args.port_file)
    print("server: e2e.Echo on 127.0.0.1:%d (grpcio %s)" % (port, grpc.__version__), flush=True)

    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: done.set())
    signal.signal(signal.SIGINT, lambda *a: done.set())
    done.wait()
    server.stop(0.5).wait()


# --------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------

class Runner:
    def __init__(self):
        self.results = []

    def check(self, name, fn):
        t0 = time.monotonic()
        try:
            note = fn()
            ok, msg = True, note or ""
        except Skip as e:
            self.results.append((name, "SKIP"))
            print("SKIP  %-34s %s" % (name, e), flush=True)
            return
        except Exception as e:  # noqa: BLE001 - report every kind of failure
            ok, msg = False, "%s: %s" % (type(e).__name__, e)
        ms = (time.monotonic() - t0) * 1000
        self.results.append((name, "PASS" if ok else "FAIL"))
        print("%s  %-34s %6.0f ms  %s" % ("PASS" if ok else "FAIL", name, ms, msg), flush=True)

    def failed(self):
        return [n for n, r in self.results if r == "FAIL"]


class Skip(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise AssertionError(msg)


def rpc_error_summary(err):
    return "code=%s details=%r trailers=%r" % (err.code(), err.details(), err.trailing_metadata())


def grpc_checks(r, gateway):
    channel = grpc.insecure_channel(gateway, options=GRPC_OPTIONS + [("grpc.enable_http_proxy", 0)])
    grpc.channel_ready_future(channel).result(timeout=10)

    def uu(method, svc=SERVICE):
        return channel.unary_unary("/%s/%s" % (svc, method), request_serializer=ident, response_deserializer=ident)

    def unary():
        payload = b"hello \x00\xff gateway"
        resp, call = uu("Unary").with_call(payload, metadata=(("x-e2e-req", "abc123"),), timeout=5)
        expect(resp == payload, "payload %r != %r" % (resp, payload))
        init = dict(call.initial_metadata())
        trail = dict(call.trailing_metadata())
        expect(init.get("x-e2e-echo") == "abc123", "initial metadata %r" % (init,))
        expect(trail.get("x-e2e-trail") == "unary-abc123", "trailing metadata %r" % (trail,))
        expect(call.code() == grpc.StatusCode.OK, "code %s" % call.code())
        return "echoed %d bytes, request metadata up, initial+trailing metadata back" % len(resp)

    def server_stream():
        m = channel.unary_stream("/%s/ServerStream" % SERVICE, request_serializer=ident, response_deserializer=ident)
        call = m(json.dumps({"n": SERVER_STREAM_N}).encode(), timeout=5)
        got = list(call)
        want = [("msg-%d" % i).encode() for i in range(SERVER_STREAM_N)]
        expect(got == want, "got %r" % got)
        expect(call.code() == grpc.StatusCode.OK, "code %s" % call.code())
        return "%d messages in order, status OK" % len(got)

    def server_stream_fail_midway():
        m = channel.unary_stream("/%s/ServerStream" % SERVICE, request_serializer=ident, response_deserializer=ident)
        call = m(json.dumps({"n": 5, "fail_after": 3}).encode(), timeout=5)
        got = []
        try:
            for msg in call:
                got.append(msg)
        except grpc.RpcError as err:
            expect(got == [b"msg-0", b"msg-1", b"msg-2"], "messages before the error: %r" % got)
            expect(err.code() == FAIL_CODE, rpc_error_summary(err))
            expect(err.details() == FAIL_DETAILS, rpc_error_summary(err))
            trail = dict(err.trailing_metadata())
            expect(trail.get("x-e2e-reason") == "frozen-bucket", rpc_error_summary(err))
            return "3 messages then %s in real trailers (after data)" % err.code().name
        raise AssertionError("stream ended without error, got %r" % got)

    def client_stream():
        m = channel.stream_unary("/%s/ClientStream" % SERVICE, request_serializer=ident, response_deserializer=ident)
        msgs = [b"a", b"bb", b"ccc", b"", b"dddd"]
        resp = json.loads(m(iter(msgs), timeout=5))
        expect(resp == {"count": 5, "joined": "abbcccdddd"}, "got %r" % resp)
        return "5 messages (one empty) counted and joined"

    def bidi():
        m = channel.stream_stream("/%s/Bidi" % SERVICE, request_serializer=ident, response_deserializer=ident)
        # Lock-step: send one, wait for its echo before sending the next, which
        # proves the gateway streams both directions instead of buffering.
        import queue
        q = queue.Queue()

        def gen():
            for i in range(5):
                yield ("ping-%d" % i).encode()
                q.get(timeout=5)  # wait for the echo before the next message

        call = m(gen(), timeout=10)
        got = []
        for resp in call:
            got.append(resp)
            q.put(None)
        want = [("echo:ping-%d" % i).encode() for i in range(5)]
        expect(got == want, "got %r" % got)
        return "5 messages echoed in lock-step (interleaved, not buffered)"

    def fail():
        try:
            uu("Fail")(b"x", timeout=5)
        except grpc.RpcError as err:
            expect(err.code() == FAIL_CODE, rpc_error_summary(err))
            expect(err.details() == FAIL_DETAILS, "details %r != %r" % (err.details(), FAIL_DETAILS))
            trail = dict(err.trailing_metadata())
            for k, v in FAIL_TRAILERS:
                expect(trail.get(k) == v, "trailer %s: %r (all: %r)" % (k, trail.get(k), trail))
            return "%s (%d), details %r, trailers %s" % (
                err.code().name, err.code().value[0], err.details(), ", ".join(k for k, _ in FAIL_TRAILERS))
        raise AssertionError("call succeeded")

    def deadline():
        t0 = time.monotonic()
        try:
            uu("Slow")(b"client-deadline", timeout=0.3)
        except grpc.RpcError as err:
            took = time.monotonic() - t0
            expect(err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, rpc_error_summary(err))
            expect(took < 2.0, "took %.2fs" % took)
            return "DEADLINE_EXCEEDED after %.0f ms" % (took * 1000)
        raise AssertionError("call succeeded")

    def slow_stats(key, wait):
        deadline_by = time.monotonic() + wait
        while True:
            stats = json.loads(uu("Stats")(b"", timeout=2))["slow"].get(key)
            if stats or time.monotonic() > deadline_by:
                return stats
            time.sleep(0.05)

    def deadline_upstream():
        # What the upstream saw of the Slow call above: grpc-timeout must
        # have crossed the gateway, and the call must end long before Slow's
        # own 5 s sleep.
        stats = slow_stats("client-deadline", 3)
        expect(stats, "upstream never finished the Slow call")
        rem = stats["time_remaining_at_start"]
        expect(rem is not None and rem <= 0.31, "upstream deadline %r (grpc-timeout not forwarded?)" % rem)
        expect(stats["cancelled"] and stats["active_for"] < 1.0, "upstream call %r" % stats)
        return "upstream saw deadline %.0f ms, call ended after %.0f ms" % (rem * 1000, stats["active_for"] * 1000)

    def gateway_deadline():
        # Route `grpc-capped` has `timeouts: { total: 300ms }`; the client
        # allows 10 s, so DEADLINE_EXCEEDED must come from the gateway.
        m = channel.unary_unary("/e2e.Capped/%s/Slow" % SERVICE, request_serializer=ident, response_deserializer=ident)
        t0 = time.monotonic()
        try:
            m(b"gateway-deadline", timeout=10)
        except grpc.RpcError as err:
            took = time.monotonic() - t0
            expect(err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, rpc_error_summary(err))
            expect(took < 2.0, "took %.2fs" % took)
            trail = dict(err.trailing_metadata() or ())
            expect(trail.get("x-portcullis-error"), "not from the gateway: " + rpc_error_summary(err))
            return "DEADLINE_EXCEEDED after %.0f ms, details %r, x-portcullis-error=%s" % (
                took * 1000, err.details(), trail.get("x-portcullis-error"))
        raise AssertionError("call succeeded")

    def gateway_deadline_upstream():
        # After its own timeout the gateway must cancel the upstream stream
        # (RST_STREAM), not leave Slow running for its full 5 s.
        stats = slow_stats("gateway-deadline", SLOW_SLEEP + 1)
        expect(stats, "upstream never finished the Slow call")
        expect(stats["cancelled"] and stats["active_for"] < 1.5, "upstream call %r" % stats)
        return "upstream call cancelled after %.0f ms (its own deadline: %.1f s)" % (
            stats["active_for"] * 1000, stats["time_remaining_at_start"] or -1)

    def dead():
        try:
            uu("X", svc="e2e.Dead")(b"x", timeout=5)
        except grpc.RpcError as err:
            expect(err.code() == grpc.StatusCode.UNAVAILABLE, rpc_error_summary(err))
            trail = dict(err.trailing_metadata() or ())
            expect(trail.get("x-portcullis-error"), "not from the gateway: " + rpc_error_summary(err))
            return "UNAVAILABLE, details %r, x-portcullis-error=%s" % (err.details(), trail.get("x-portcullis-error"))
        raise AssertionError("call succeeded")

    def unrouted():
        try:
            uu("M", svc="nope.Svc")(b"x", timeout=5)
        except grpc.RpcError as err:
            expect(err.code() == grpc.StatusCode.UNIMPLEMENTED, rpc_error_summary(err))
            trail = dict(err.trailing_metadata() or ())
            expect(trail.get("x-portcullis-error"), "not from the gateway: " + rpc_error_summary(err))
            return "UNIMPLEMENTED, details %r, x-portcullis-error=%s" % (err.details(), trail.get("x-portcullis-error"))
        raise AssertionError("call succeeded")

    def large():
        size = 3 * 1024 * 1024 + 17
        payload = bytes((i * 7 + 3) & 0xFF for i in range(size))
        resp = uu("Unary")(payload, timeout=20)
        expect(resp == payload, "payload mismatch (len %d)" % len(resp))
        return "%d bytes round-tripped" % size

    def concurrent50():
        futs = [uu("Unary").future(("call-%d" % i).encode(), timeout=10) for i in range(50)]
        got = [f.result() for f in futs]
        bad = [i for i, g in enumerate(got) if g != ("call-%d" % i).encode()]
        expect(not bad, "wrong payloads for %r" % bad)
        return "50/50 OK on one multiplexed connection"

    r.check("grpc unary", unary)
    r.check("grpc server-stream", server_stream)
    r.check("grpc server-stream error midway", server_stream_fail_midway)
    r.check("grpc client-stream", client_stream)
    r.check("grpc bidi", bidi)
    r.check("grpc Fail status+trailers", fail)
    r.check("grpc deadline 300ms -> Slow", deadline)
    r.check("grpc deadline seen upstream", deadline_upstream)
    r.check("grpc route total timeout 300ms", gateway_deadline)
    r.check("grpc route timeout cancels upstream", gateway_deadline_upstream)
    r.check("grpc dead upstream", dead)
    r.check("grpc unrouted method", unrouted)
    r.check("grpc 3 MiB message", large)
    r.check("grpc 50 concurrent unary", concurrent50)
    channel.close()


# ---- gRPC-Web, spoken by hand over HTTP/1.1 --------------------------------

ORIGIN = "https://app.example"


def frame(msg, flag=0):
    return struct.pack(">BI", flag, len(msg)) + msg


def parse_frames(body):
    frames = []
    i = 0
    while i < len(body):
        expect(len(body) - i >= 5, "truncated frame header at %d of %d" % (i, len(body)))
        flag, n = struct.unpack(">BI", body[i:i + 5])
        expect(len(body) - i - 5 >= n, "truncated frame at %d (len %d) of %d" % (i, n, len(body)))
        frames.append((flag, body[i + 5:i + 5 + n]))
        i += 5 + n
    return frames


def parse_trailer_block(data):
    out = {}
    for line in data.decode("latin-1").split("\r\n"):
        if not line:
            continue
        k, _, v = line.partition(":")
        expect(k == k.lower(), "trailer key not lowercase: %r" % k)
        out[k.strip()] = v.strip()
    return out


def b64decode_chunks(text):
    """grpc-web-text bodies may be several base64 chunks, each padded."""
    text = "".join(text.split())
    out = b""
    while text:
        eq = text.find("=")
        if eq < 0:
            out += base64.b64decode(text, validate=True)
            break
        end = eq
        while end < len(text) and text[end] == "=":
            end += 1
        out += base64.b64decode(text[:end], validate=True)
        text = text[end:]
    return out


def web_call(host, port, method, body, text=False, extra=None, service=SERVICE):
    ct = "application/grpc-web-text" if text else "application/grpc-web+proto"
    headers = {
        "content-type": ct,
        "x-grpc-web": "1",
        "x-user-agent": "grpc-web-javascript/0.1",
        "accept": ct,
        "origin": ORIGIN,
    }
    headers.update(extra or {})
    data = frame(body)
    if text:
        data = base64.b64encode(data)
    conn = http.client.HTTPConnection(host, port, timeout=10)
    try:
        conn.request("POST", "/%s/%s" % (service, method), body=data, headers=headers)
        resp = conn.getresponse()
        raw = resp.read()
        hdrs = {k.lower(): v for k, v in resp.getheaders()}
        return resp.status, hdrs, raw
    finally:
        conn.close()


def web_decode(status, hdrs, raw, text):
    expect(status == 200, "HTTP %d, headers %r, body %r" % (status, hdrs, raw[:200]))
    want_ct = "application/grpc-web-text+proto" if text else "application/grpc-web+proto"
    expect(hdrs.get("content-type") == want_ct, "content-type %r != %r" % (hdrs.get("content-type"), want_ct))
    body = b64decode_chunks(raw.decode("ascii")) if text else raw
    frames = parse_frames(body)
    data = [f for flag, f in frames if flag == 0]
    trailers = [f for flag, f in frames if flag & 0x80]
    others = [flag for flag, f in frames if flag not in (0, 0x80)]
    expect(not others, "unexpected frame flags %r" % others)
    expect(len(trailers) <= 1, "%d trailer frames" % len(trailers))
    if trailers:
        expect(frames[-1][0] & 0x80, "trailer frame is not last")
    tr = parse_trailer_block(trailers[0]) if trailers else {}
    return data, tr


def web_status(hdrs, tr):
    """The grpc-status: trailer frame, or the headers for trailers-only."""
    if "grpc-status" in tr:
        return tr, "trailer frame"
    if "grpc-status" in hdrs:
        return hdrs, "response headers (trailers-only)"
    raise AssertionError("no grpc-status in trailer frame %r or headers %r" % (tr, hdrs))


def grpc_web_checks(r, web):
    host, _, port = web.rpartition(":")
    port = int(port)

    def unary_binary():
        payload = b"web \x00\x01 binary"
        status, hdrs, raw = web_call(host, port, "Unary", payload)
        data, tr = web_decode(status, hdrs, raw, text=False)
        expect(data == [payload], "data frames %r" % data)
        st, where = web_status(hdrs, tr)
        expect(st.get("grpc-status") == "0", "grpc-status %r in %s" % (st.get("grpc-status"), where))
        acao = hdrs.get("access-control-allow-origin")
        expect(acao == ORIGIN, "access-control-allow-origin %r" % acao)
        expose = [h.strip().lower() for h in hdrs.get("access-control-expose-headers", "").split(",")]
        expect("grpc-status" in expose, "access-control-expose-headers %r" % hdrs.get("access-control-expose-headers"))
        return "1 data frame + trailer grpc-status:0 (%s); ACAO and Expose-Headers ok" % where

    def unary_text():
        payload = b"web text \xff\xfe payload"
        status, hdrs, raw = web_call(host, port, "Unary", payload, text=True)
        data, tr = web_decode(status, hdrs, raw, text=True)
        expect(data == [payload], "data frames %r" % data)
        st, where = web_status(hdrs, tr)
        expect(st.get("grpc-status") == "0", "grpc-status %r in %s" % (st.get("grpc-status"), where))
        return "base64 body decodes to data + trailer grpc-status:0 (%s)" % where

    def fail(text):
        def run():
            status, hdrs, raw = web_call(host, port, "Fail", b"x", text=text)
            data, tr = web_decode(status, hdrs, raw, text=text)
            expect(data == [], "data frames %r" % data)
            st, where = web_status(hdrs, tr)
            code = str(FAIL_CODE.value[0])
            expect(st.get("grpc-status") == code, "grpc-status %r != %s in %s" % (st.get("grpc-status"), code, where))
            msg = urllib.parse.unquote(st.get("grpc-message", ""), encoding="utf-8")
            expect(msg == FAIL_DETAILS, "grpc-message %r -> %r" % (st.get("grpc-message"), msg))
            expect(st.get("x-e2e-reason") == "frozen-bucket", "x-e2e-reason in %s: %r" % (where, st))
            return "grpc-status %s + grpc-message + x-e2e-reason in %s" % (code, where)
        return run

    def server_stream():
        status, hdrs, raw = web_call(host, port, "ServerStream", json.dumps({"n": SERVER_STREAM_N}).encode())
        data, tr = web_decode(status, hdrs, raw, text=False)
        want = [("msg-%d" % i).encode() for i in range(SERVER_STREAM_N)]
        expect(data == want, "data frames %r" % data)
        expect(tr.get("grpc-status") == "0", "trailer frame %r" % tr)
        return "%d data frames then trailer grpc-status:0" % len(data)

    def unrouted():
        # A gateway error for a gRPC-Web caller is a gRPC status in its own
        # encoding, not a JSON 404.
        status, hdrs, raw = web_call(host, port, "M", b"x", service="nope.Svc")
        data, tr = web_decode(status, hdrs, raw, text=False)
        st, where = web_status(hdrs, tr)
        expect(st.get("grpc-status") == "12", "grpc-status %r in %s" % (st.get("grpc-status"), where))
        return "grpc-status 12 (UNIMPLEMENTED) in %s, x-portcullis-error=%s" % (where, hdrs.get("x-portcullis-error"))

    def preflight():
        conn = http.client.HTTPConnection(host, port, timeout=10)
        try:
            conn.request("OPTIONS", "/%s/Unary" % SERVICE, headers={
                "origin": ORIGIN,
                "access-control-request-method": "POST",
                "access-control-request-headers": "content-type,x-grpc-web",
            })
            resp = conn.getresponse()
            resp.read()
            hdrs = {k.lower(): v for k, v in resp.getheaders()}
        finally:
            conn.close()
        expect(resp.status == 204, "HTTP %d, headers %r" % (resp.status, hdrs))
        expect(hdrs.get("access-control-allow-origin") == ORIGIN, "headers %r" % hdrs)
        return "204, Allow-Origin %s, Allow-Headers %r" % (
            hdrs.get("access-control-allow-origin"), hdrs.get("access-control-allow-headers"))

    r.check("grpc-web unary (binary)", unary_binary)
    r.check("grpc-web unary (text)", unary_text)
    r.check("grpc-web Fail (binary)", fail(False))
    r.check("grpc-web Fail (text)", fail(True))
    r.check("grpc-web server-stream", server_stream)
    r.check("grpc-web unrouted method", unrouted)
    r.check("grpc-web CORS preflight", preflight)


def run_client(args):
    print("client: grpcio %s, gateway %s" % (grpc.__version__, args.gateway), flush=True)
    r = Runner()
    grpc_checks(r, args.gateway)
    if args.web:
        grpc_web_checks(r, args.web)
    else:
        r.check("grpc-web checks", lambda: (_ for _ in ()).throw(Skip("E2E_GRPC_WEB=0")))
    failed = r.failed()
    passed = sum(1 for _, x in r.results if x == "PASS")
    print("client: %d passed, %d failed, %d skipped" % (
        passed, len(failed), sum(1 for _, x in r.results if x == "SKIP")), flush=True)
    return 1 if failed else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("server")
    s.add_argument("--port-file", required=True)
    c = sub.add_parser("client")
    c.add_argument("--gateway", required=True, help="host:port of the gRPC (h2c) listener")
    c.add_argument("--web", help="host:port of the gRPC-Web listener")
    args = p.parse_args()
    if args.cmd == "server":
        run_server(args)
        return 0
    return run_client(args)


if __name__ == "__main__":
    sys.exit(main())
