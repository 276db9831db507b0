"""Parses a Prometheus text scrape (stdin) with the official client's parser and prints one
line per family, `name type`, then one per sample, `sample_name{k="v",...} value` (labels
sorted). Exits non-zero when the text does not parse."""
import sys

from prometheus_client.parser import text_string_to_metric_families

text = sys.stdin.read()
out = []
for family in text_string_to_metric_families(text):
    out.append(f"# {family.name} {family.type}")
    for sample in family.samples:
        labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
        out.append(f"{sample.name}{{{labels}}} {sample.value}")
print("\n".join(out))
