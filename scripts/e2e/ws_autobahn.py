#!/usr/bin/env python3
"""Autobahn fuzzing-client cases via kosoku, for scripts/e2e/websocket.sh.

  ws_autobahn.py run URL --out FILE.json [-i CASE]... [-x CASE]... [-p N] [--report-dir DIR]
      Runs the cases against the WebSocket server at URL (kosoku's
      run_fuzzingclient), writes one JSON record per case to FILE.json and
      prints the counts per outcome. Exit 0 whatever the outcomes.

  ws_autobahn.py compare DIRECT.json GATEWAY.json
      Prints both tallies side by side and every case whose outcome differs.
      Exit 1 if any case FAILED (or could not run: ERROR) through the gateway,
      or if the two runs did not cover the same cases; else 0.

The outcome of a case is Autobahn's `behavior` (OK, NON-STRICT,
INFORMATIONAL, UNIMPLEMENTED, FAILED; kosoku adds ERROR for a case that
could not run to a verdict). Autobahn reports the closing handshake
separately (`behaviorClose`); it is tallied too and differences in it are
listed, but, as in Autobahn's own report, it does not by itself fail a case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter

OUTCOMES = ["OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "ERROR"]
BAD = {"FAILED", "ERROR"}


def _key(case_id: str) -> list[int]:
    return [int(p) for p in case_id.split(".")]


def _record(r) -> dict:
    return {
        "id": r.case_id,
        "behavior": r.behavior.value,
        "behaviorClose": r.behavior_close.value,
        "result": r.result,
        "resultClose": r.result_close,
        "duration_ms": r.duration,
        "remoteCloseCode": r.remote_close_code,
        "localCloseCode": r.local_close_code,
        "wasClean": r.was_clean,
        "wasNotCleanReason": r.was_not_clean_reason,
        "droppedByMe": r.dropped_by_me,
        "closedByMe": r.closed_by_me,
        "agent": r.agent,
    }


def _tally(records: list[dict]) -> Counter:
    return Counter(r["behavior"] for r in records)


def _fmt_counts(c: Counter) -> str:
    keys = OUTCOMES + sorted(k for k in c if k not in OUTCOMES)
    return " ".join(f"{k}={c.get(k, 0)}" for k in keys if k in OUTCOMES or c.get(k))


async def _run(args) -> int:
    from kosoku import FailureError, run_fuzzingclient

    start = time.monotonic()
    try:
        results = await run_fuzzingclient(
            args.url, args.include, args.exclude, concurrency=args.parallelism
        )
    except FailureError as failure:
        # kosoku raises when any case did not pass; the results ride along.
        results = failure.results
    elapsed = time.monotonic() - start

    records = sorted((_record(r) for r in results), key=lambda r: _key(r["id"]))
    with open(args.out, "w") as f:
        json.dump({"url": args.url, "seconds": round(elapsed, 1), "cases": records}, f, indent=1)
    if args.report_dir:
        try:
            from kosoku._report import write_reports  # what the kosoku CLI uses

            write_reports(results, args.report_dir)
        except Exception as e:  # the report is a convenience; never fail the run on it
            print(f"ws_autobahn: could not write HTML/JSON report: {e}", file=sys.stderr)
    agent = records[0]["agent"] if records else "?"
    print(
        f"{args.label}: {len(records)} cases in {elapsed:.1f}s against {args.url} "
        f"(Server: {agent}): {_fmt_counts(_tally(records))}"
    )
    return 0


def _compare(args) -> int:
    with open(args.direct) as f:
        direct = {r["id"]: r for r in json.load(f)["cases"]}
    with open(args.gateway) as f:
        gateway = {r["id"]: r for r in json.load(f)["cases"]}

    dc, gc = _tally(direct.values()), _tally(gateway.values())
    print(f"{'outcome':<14}{'direct':>8}{'gateway':>9}")
    for k in OUTCOMES + sorted((set(dc) | set(gc)) - set(OUTCOMES)):
        print(f"{k:<14}{dc.get(k, 0):>8}{gc.get(k, 0):>9}")
    print(f"{'total':<14}{sum(dc.values()):>8}{sum(gc.values()):>9}")

    dcl = Counter(r["behaviorClose"] for r in direct.values())
    gcl = Counter(r["behaviorClose"] for r in gateway.values())
    print(
        "closing handshake (behaviorClose): direct "
        + ", ".join(f"{k}={v}" for k, v in sorted(dcl.items()))
        + " | gateway "
        + ", ".join(f"{k}={v}" for k, v in sorted(gcl.items()))
    )

    status = 0
    only_d = sorted(set(direct) - set(gateway), key=_key)
    only_g = sorted(set(gateway) - set(direct), key=_key)
    if only_d or only_g:
        print(f"MISMATCH: cases only in direct run: {only_d}; only through gateway: {only_g}")
        status = 1

    diff = [
        i
        for i in sorted(set(direct) & set(gateway), key=_key)
        if (direct[i]["behavior"], direct[i]["behaviorClose"])
        != (gateway[i]["behavior"], gateway[i]["behaviorClose"])
    ]
    if diff:
        print(f"{len(diff)} case(s) with a different outcome through the gateway:")
        for i in diff:
            d, g = direct[i], gateway[i]
            print(
                f"  {i:<9} direct {d['behavior']}/{d['behaviorClose']} -> gateway "
                f"{g['behavior']}/{g['behaviorClose']}: {g['result']} {g['resultClose']}"
                + (f" [not clean: {g['wasNotCleanReason']}]" if g["wasNotCleanReason"] else "")
            )
    else:
        print("every case has the same outcome (behavior and closing behavior) directly and through the gateway")

    bad_d = sorted((i for i, r in direct.items() if r["behavior"] in BAD), key=_key)
    bad_g = sorted((i for i, r in gateway.items() if r["behavior"] in BAD), key=_key)
    if bad_d:
        print(f"note: {len(bad_d)} case(s) FAILED/ERROR directly (the echo server itself): {bad_d}")
    if bad_g:
        added = [i for i in bad_g if i not in bad_d]
        print(
            f"FAIL: {len(bad_g)} case(s) FAILED/ERROR through the gateway: {bad_g}"
            + (f"; {len(added)} of them pass directly: {added}" if added else "")
        )
        status = 1
    return status


def main() -> int:
    parser = argparse.ArgumentParser(description="Autobahn cases via kosoku")
    sub = parser.add_subparsers(dest="cmd", required=True)
    run = sub.add_parser("run")
    run.add_argument("url")
    run.add_argument("--out", required=True)
    run.add_argument("--label", default="run")
    run.add_argument("-i", "--include", action="append")
    run.add_argument("-x", "--exclude", action="append")
    run.add_argument("-p", "--parallelism", type=int, default=1)
    run.add_argument("--report-dir")
    cmp_ = sub.add_parser("compare")
    cmp_.add_argument("direct")
    cmp_.add_argument("gateway")
    args = parser.parse_args()
    if args.cmd == "run":
        return asyncio.run(_run(args))
    return _compare(args)


if __name__ == "__main__":
    sys.exit(main())
