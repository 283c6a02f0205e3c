"""Reads Prometheus text from stdin with prometheus-client's own parser and prints its
samples as JSON lines: {"name", "labels", "value"}; also checks every family has a type.
Any parse error exits non-zero (the parser raises)."""
import json
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
families = list(text_string_to_metric_families(text))
if not families:
    sys.exit("no metric families")
for family in families:
    if family.type not in ("counter", "gauge", "histogram"):
        sys.exit(f"family {family.name} has type {family.type}")
    for s in family.samples:
        print(json.dumps({"name": s.name, "labels": s.labels, "value": s.value}))
