"""Parses a Prometheus text-format document with prometheus_client's own parser.

Usage: parse_prometheus.py FILE
Prints one JSON object: {"families": {name: type}, "samples": [[name, {labels}, value], ...]}.
Exits non-zero (with the parser's message) when the document does not parse.
"""
import json
import math
import sys

from prometheus_client.parser import text_string_to_metric_families


def main() -> int:
    with open(sys.argv[1], encoding="utf-8") as f:
        text = f.read()
    families = {}
    samples = []
    try:
        for fam in text_string_to_metric_families(text):
            if fam.name in families:
                raise ValueError(f"family {fam.name} appears twice")
            families[fam.name] = fam.type
            for s in fam.samples:
                value = s.value
                if math.isinf(value) or math.isnan(value):
                    raise ValueError(f"sample {s.name} has value {value}")
                samples.append([s.name, s.labels, value])
    except Exception as e:  # the parser raises ValueError and friends
        print(f"parse error: {e}", file=sys.stderr)
        return 1
    json.dump({"families": families, "samples": samples}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
