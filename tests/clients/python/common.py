"""Shared pieces of the Python client scenarios (see tests/clients/README.md).

Every scenario program is called as `PROGRAM SCENARIO BOOTSTRAP TAG [ARGS...]` and exits 0 when
the scenario passed, 2 when the client lacks what the scenario needs (the first line of stdout
says why), anything else when it failed. `PROGRAM version` prints the client's version.
"""

import sys
import time

UNSUPPORTED = 2

# The cross-client format: XC_COUNT messages on partition 0 of topic `xc-<producer tag>`,
# written in blocks of XC_BLOCK, one block per compression codec the producer supports.
XC_COUNT = 20
XC_BLOCK = 4
CODECS = ["none", "gzip", "snappy", "lz4", "zstd"]

# The broker runs with message.max.bytes=MAX_MESSAGE_BYTES (see tests/clients.rs).
MAX_MESSAGE_BYTES = 65536
UNDER_VALUE_BYTES = MAX_MESSAGE_BYTES - 512
OVER_VALUE_BYTES = MAX_MESSAGE_BYTES + 512


def xc_message(tag, i):
    """(key, value, headers) of message i of the cross-client topic written by `tag`."""
    key = None if i % 5 == 4 else f"key-{i}".encode()
    value = f"{tag}:{i}:".encode() + "é€😀".encode() + bytes([i, 0, 255]) + b"x" * (i * 7)
    headers = [("h-index", str(i).encode()), ("h-bin", bytes([0, i, 255]))]
    if i % 3 == 0:
        headers.append(("h-empty", b""))
    return key, value, headers


def check_xc(producer_tag, got):
    """Checks the consumed (key, value, headers) list of `xc-<producer_tag>`."""
    if len(got) != XC_COUNT:
        fail(f"xc-{producer_tag}: {len(got)} messages, expected {XC_COUNT}")
    for i, (key, value, headers) in enumerate(got):
        ek, ev, eh = xc_message(producer_tag, i)
        if key != ek or value != ev:
            fail(f"xc-{producer_tag} #{i}: key/value {key!r}/{value[:40]!r} != {ek!r}/{ev[:40]!r}")
        norm = [(k, bytes(v) if v is not None else b"") for k, v in headers]
        if norm != eh:
            fail(f"xc-{producer_tag} #{i}: headers {norm!r} != {eh!r}")


def kv_messages(n=12):
    """Messages for produce_consume: keys, null keys (every 3rd) and headers (every 2nd)."""
    out = []
    for i in range(n):
        key = None if i % 3 == 2 else f"k{i}".encode()
        headers = [("hk", f"hv{i}".encode()), ("hk2", b"\x00\x01")] if i % 2 == 0 else []
        out.append((key, f"value-{i}".encode(), headers))
    return out


def check_kv(expected, got):
    if len(got) != len(expected):
        fail(f"consumed {len(got)} messages, expected {len(expected)}: {got!r}")
    for i, ((ek, ev, eh), (k, v, h)) in enumerate(zip(expected, got)):
        h = [(hk, bytes(hv) if hv is not None else b"") for hk, hv in (h or [])]
        if (ek, ev, eh) != (k, v, h):
            fail(f"message {i}: got {(k, v, h)!r}, expected {(ek, ev, eh)!r}")


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def unsupported(msg):
    print(msg, flush=True)
    sys.exit(UNSUPPORTED)


def until(deadline_s, what, fn, interval=0.1):
    """Calls fn until it returns truthy or deadline_s seconds pass (then fails naming `what`)."""
    end = time.time() + deadline_s
    while time.time() < end:
        r = fn()
        if r:
            return r
        time.sleep(interval)
    fail(f"timed out waiting for {what}")


def main(scenarios, version):
    if len(sys.argv) >= 2 and sys.argv[1] == "version":
        print(version)
        return
    if len(sys.argv) < 4:
        print("usage: PROGRAM SCENARIO BOOTSTRAP TAG [ARGS...]", file=sys.stderr)
        sys.exit(64)
    scenario, bootstrap, tag, args = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
    fn = scenarios.get(scenario)
    if fn is None:
        unsupported(f"no scenario {scenario} for this client")
    try:
        fn(bootstrap, tag, *args)
    except Exception as e:  # noqa: BLE001 - any client error fails the scenario, named
        print(f"FAIL: {type(e).__name__}: {e}", flush=True)
        sys.exit(1)
    print("ok", flush=True)
