#!/usr/bin/env python3
"""Holds N idle keep-alive HTTP/1.1 connections open to a proxy and reports what they cost it.

Each connection sends one GET (in one write), reads the whole answer, then stays open and idle.
The proxy's RSS (summed over the given pids, from /proc) is read before the first connection and
again once all are idle; the difference divided by N is the cost of one idle connection.

    idle_conns.py --target 127.0.0.1:8080 --pids 1234 [--count 10000]

Only loopback targets are accepted. Every wait is bounded (--timeout seconds in all).
"""
import argparse
import asyncio
import ipaddress
import sys
import time


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


async def one(host, port, request, held, deadline):
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection(host, port), deadline - time.monotonic()
    )
    writer.write(request)
    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), deadline - time.monotonic())
    if not head.startswith(b"HTTP/1.1 200"):
        raise RuntimeError(f"answer: {head[:40]!r}")
    length = 0
    for line in head.split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    await asyncio.wait_for(reader.readexactly(length), deadline - time.monotonic())
    held.append(writer)


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--target", default="127.0.0.1:8080")
    p.add_argument("--pids", required=True, help="comma-separated pids whose RSS is summed")
    p.add_argument("--count", type=int, default=10000)
    p.add_argument("--parallel", type=int, default=200, help="connections opened at once")
    p.add_argument("--timeout", type=float, default=120.0)
    p.add_argument("--label", default="proxy")
    a = p.parse_args()
    host, port = a.target.rsplit(":", 1)
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"idle_conns.py: {host} is not a loopback address")
    pids = [int(x) for x in a.pids.split(",")]
    request = f"GET / HTTP/1.1\r\nHost: {a.target}\r\n\r\n".encode()
    deadline = time.monotonic() + a.timeout
    before = rss_kib(pids)
    held = []
    sem = asyncio.Semaphore(a.parallel)

    async def bounded():
        async with sem:
            await one(host, int(port), request, held, deadline)

    results = await asyncio.gather(*(bounded() for _ in range(a.count)), return_exceptions=True)
    errors = [r for r in results if isinstance(r, Exception)]
    await asyncio.sleep(1.0)  # let the proxy settle into idle
    after = rss_kib(pids)
    per = (after - before) / max(len(held), 1)
    print(
        f"| {a.label} | {len(held)} | {len(errors)} | {before / 1024:.1f} | {after / 1024:.1f} "
        f"| {(after - before) / 1024:.1f} | {per:.2f} |"
    )
    if errors:
        print(f"first error: {errors[0]!r}", file=sys.stderr)
    for w in held:
        w.close()


asyncio.run(main())
