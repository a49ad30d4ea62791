"""Summarise a py-spy raw profile of `splitca serve`: where the enrollment hot path spends its time."""

from __future__ import annotations

import collections
import re
import sys
from pathlib import Path

# (category, pattern over the leaf frame "function (file:line)"), first match wins
CATEGORIES = [
    ("RSA-4096 signature (CertificateBuilder.sign)", r"CertificateBuilder\.sign|create_x509"),
    ("idle worker threads", r"Condition\.wait|Queue\.get|EpollSelector\.select"),
    ("waiting for a cadir lock", r"FileLock"),
    ("file writes + fsync", r"\b(stage|append_line|publish|fsync_dir|atomic_write|sync_upto)\b"),
    ("SQLite index", r"index\.py|sqlite"),
    ("TLS and HTTP (cheroot, ssl)", r"cheroot|ssl\.py|socket\.py|selectors\.py|_pyio\.py|makefile"),
    ("CSR parsing and policy checks", r"load_csr|inspect_csr|_signature_valid|check_crypto|vet\b"),
    ("audit log and logging", r"audit\.py|logging"),
]


def summarise(path: Path, top: int = 15) -> str:
    leaf_counts: collections.Counter[str] = collections.Counter()
    category: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        frames = [f for f in stack.split(";") if not f.startswith("process ")]
        leaf = re.sub(r":\d+\)", ")", frames[-1] if frames else "?")
        total += count
        leaf_counts[leaf] += count
        for name, pattern in CATEGORIES:
            if re.search(pattern, leaf):
                category[name] += count
                break
        else:
            category["other Python (routing, JSON, PEM, bookkeeping)"] += count
    busy = total - category["idle worker threads"]
    out = [f"{total} samples ({busy} not idle)", "", "by category (share of non-idle samples):"]
    for name, count in category.most_common():
        if name != "idle worker threads":
            out.append(f"  {count / max(1, busy) * 100:5.1f}%  {name}")
    out += ["", f"top {top} leaf functions (share of non-idle samples):"]
    for leaf, count in leaf_counts.most_common(top + 3):
        if re.search(CATEGORIES[1][1], leaf):
            continue
        out.append(f"  {count / max(1, busy) * 100:5.1f}%  {leaf}")
    return "\n".join(out[: 5 + len(category) + top])


if __name__ == "__main__":
    print(summarise(Path(sys.argv[1])))
