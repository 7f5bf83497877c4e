"""How long an unknown Hub id takes to fail without network: the Hub client's own path (requests and
retries) vs `emocli.hub.load_pretrained` (offline detected once, then local_files_only). Side by side in
one process; the first emocli call includes the one-time probe.

    python benchmarks/hub_offline_latency.py [--id someorg/no-such-model]
"""

from __future__ import annotations

import argparse
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--id", default="someorg/no-such-model")
    args = parser.parse_args()

    from transformers import AutoConfig

    from emocli import hub
    from emocli.errors import EmoError

    start = time.perf_counter()
    try:
        AutoConfig.from_pretrained(args.id)
    except OSError:
        pass
    client = time.perf_counter() - start

    times = []
    for _ in range(2):
        start = time.perf_counter()
        try:
            hub.load_pretrained(AutoConfig.from_pretrained, args.id, "model.pretrained")
        except EmoError:
            pass
        times.append(time.perf_counter() - start)
    print(f"offline detected: {hub.hub_offline()}")
    print(f"Hub client alone:            {client:7.2f} s")
    print(f"emo, first call (probe):     {times[0]:7.2f} s   ratio {client / max(times[0], 1e-9):.0f}x")
    print(f"emo, next calls:             {times[1]:7.2f} s   ratio {client / max(times[1], 1e-9):.0f}x")


if __name__ == "__main__":
    main()
