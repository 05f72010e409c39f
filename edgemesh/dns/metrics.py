"""Prometheus metrics of the mesh DNS (process-wide: one DNS server per agent)."""

from __future__ import annotations

from prometheus_client import Counter

QUERIES = Counter(
    "edgemesh_dns_queries_total",
    "DNS queries answered, by question type and result",
    ["qtype", "result"],  # result: noerror nodata nxdomain servfail formerr refused notimp
)
FORWARDED = Counter(
    "edgemesh_dns_forwarded_total",
    "Questions sent to upstream resolvers, by outcome",
    ["result"],  # ok timeout error no_upstream overload
)
CACHE_HITS = Counter("edgemesh_dns_forward_cache_hits_total", "Forwarded questions answered from the cache")
CACHE_MISSES = Counter("edgemesh_dns_forward_cache_misses_total", "Forwarded questions not in the cache")
ANSWER_CACHE_HITS = Counter(
    "edgemesh_dns_answer_cache_hits_total", "Cluster queries answered from the packed-answer cache"
)
TRUNCATED = Counter("edgemesh_dns_truncated_total", "UDP answers sent with the TC bit (too large)")
DROPPED = Counter("edgemesh_dns_dropped_total", "Packets dropped unanswered, by reason", ["reason"])

# Question types get their own label value; anything else is "OTHER" (bounded cardinality).
QTYPE_LABELS = frozenset(
    {"A", "AAAA", "SRV", "PTR", "CNAME", "TXT", "SOA", "NS", "MX", "ANY", "HTTPS", "SVCB"}
)
