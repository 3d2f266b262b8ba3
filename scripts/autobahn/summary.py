"""Summarises an Autobahn|Testsuite fuzzingclient report (index.json) per case group.

Usage: python summary.py REPORT_DIR AGENT GROUP...
Prints, per group, how many cases ended with each behavior, then every case that is not
OK with its description and close behavior. Exits 1 if a case of the listed groups is
FAILED or UNIMPLEMENTED (or a group has no result at all), else 0. Python 2 and 3.
"""
from __future__ import print_function

import io
import json
import os
import sys

ORDER = ["OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED"]
BAD = ("FAILED", "UNIMPLEMENTED")


def case_key(case_id):
    return tuple(int(p) for p in case_id.split("."))


def main(argv):
    outdir, agent, groups = argv[1], argv[2], argv[3:]
    with io.open(os.path.join(outdir, "index.json"), encoding="utf-8") as f:
        index = json.load(f)
    if agent not in index:
        print("no results for agent %r in %s" % (agent, outdir))
        return 1
    results = index[agent]
    status = 0
    header = "%-6s %6s" % ("group", "cases") + "".join(" %14s" % b for b in ORDER)
    print(header)
    print("-" * len(header))
    totals = dict((b, 0) for b in ORDER)
    for group in groups:
        ids = [c for c in results if c.split(".")[0] == group]
        counts = dict((b, 0) for b in ORDER)
        for c in ids:
            b = results[c]["behavior"]
            counts[b] = counts.get(b, 0) + 1
            totals[b] = totals.get(b, 0) + 1
            if b in BAD:
                status = 1
        if not ids:
            status = 1
        extra = ["%s=%d" % (b, n) for b, n in counts.items() if b not in ORDER]
        print("%-6s %6d" % (group, len(ids))
              + "".join(" %14d" % counts[b] for b in ORDER)
              + ("  " + " ".join(extra) if extra else "")
              + ("  (no results!)" if not ids else ""))
    print("-" * len(header))
    print("%-6s %6d" % ("all", sum(totals.values()))
          + "".join(" %14d" % totals.get(b, 0) for b in ORDER))

    notable = sorted(
        (c for c in results
         if c.split(".")[0] in groups
         and (results[c]["behavior"] != "OK" or results[c]["behaviorClose"] != "OK")),
        key=case_key)
    if notable:
        print()
        print("cases not fully OK (behavior / close behavior / remote close code):")
    for c in notable:
        r = results[c]
        desc = ""
        report = os.path.join(outdir, r["reportfile"].replace(".html", ".json"))
        if os.path.exists(report):
            with io.open(report, encoding="utf-8") as f:
                detail = json.load(f)
            desc = " ".join(detail.get("description", "").replace("<br>", " ").split())
            result = " ".join(detail.get("result", "").split())
            if r["behavior"] != "OK" and result:
                desc += " -- " + result
        print("  %-9s %-13s %-13s %-5s %s" % (
            c, r["behavior"], r["behaviorClose"], r.get("remoteCloseCode"), desc[:300]))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv))
