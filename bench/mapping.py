"""Mapping benchmark: an ORU^R01 with 20 OBX parsed, mapped to a FHIR transaction Bundle and checked (the
structural check only; fully validated against FHIR R4, the default message path; and, to compare, with
the old fhir.resources R4B model validation), in milliseconds per message, beside hl7apy's parse alone (and
python-hl7's) in the same run.

    python bench/mapping.py [--rounds 15] [--per-round 50]

Prints medians over rounds (the machine is shared and noisy: medians, and the peers measured in the same
run, are what to compare). Results go to docs/benchmarks.md, section "Mapping".
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from engine.mapping import map_message  # noqa: E402
from engine.mapping.registry import Registry  # noqa: E402
from engine.mapping.validate import validate_bundle, validate_bundle_models  # noqa: E402


def oru_r01(observations: int = 20) -> str:
    head = (
        "MSH|^~\\&|LAB|ACME|EHR|HOSP|20230209145442+0100||ORU^R01^ORU_R01|MSG0001|P|2.5.1\r"
        "PID|1||123456^^^HOSP&1.2.3.4&ISO^MR||Doe^Jane^Q||19700101|F|||1 Main St^^Town^ST^12345\r"
        "PV1|1|O|CLINIC^101^A||||1234^Smith^John|||||||||||V100^^^HOSP^VN\r"
        "ORC|RE|ORD1^EHR|FIL1^LAB||CM||||20230209120000|||1234^Smith^John\r"
        "OBR|1|ORD1^EHR|FIL1^LAB|24323-8^Comprehensive metabolic panel^LN|||20230209110000|||||||||"
        "1234^Smith^John||||||20230209140000|||F\r"
    )
    obx = "".join(
        f"OBX|{i}|NM|{1000 + i}-{i % 10}^Test {i}^LN||{i * 1.5}|mg/dL^mg/dL^UCUM|1.0-{i + 10}|"
        f"{'H' if i % 3 == 0 else 'N'}|||F|||20230209130100\r"
        for i in range(1, observations + 1)
    )
    return head + obx


def interleaved(
    contenders: dict[str, tuple[object, int]], rounds: int, clock=time.perf_counter
) -> dict[str, float]:
    """Median ms/message of each contender; rounds alternate between them so that all see the same load
    on a shared machine (a slow minute then slows every one, not only whoever ran in it)."""
    samples: dict[str, list[float]] = {name: [] for name in contenders}
    for fn, _ in contenders.values():
        fn()  # warm caches (compiled mappings, structure tables)
    for _ in range(rounds):
        for name, (fn, per_round) in contenders.items():
            start = clock()
            for _ in range(per_round):
                fn()
            samples[name].append((clock() - start) / per_round * 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=50)
    parser.add_argument(
        "--freeze",
        action="store_true",
        help="gc.freeze() after warm-up, as a long-running server does after start-up: the collector then "
        "stops rescanning the import-time objects (fhir.resources models, hl7apy tables) at every collection",
    )
    parser.add_argument(
        "--cpu",
        action="store_true",
        help="measure process CPU time instead of wall time (steadier on a busy machine)",
    )
    args = parser.parse_args()
    text = oru_r01()
    raw = text.encode()

    import hl7

    clock = time.process_time if args.cpu else time.perf_counter
    # the message path validates fully by default (mapping.full_validation); the check-only row turns it off
    checked, full = Registry(full_validation=False), Registry(full_validation=True)
    conduit = {
        "conduit parse+map+check": (lambda: map_message(raw, registry=checked), args.per_round),
        # the default message path: map_message validates every resource with engine.fhir.r4_validator
        "conduit parse+map+full R4 validation": (lambda: map_message(raw, registry=full), args.per_round),
        "conduit parse+map+R4B model validation (old)": (
            lambda: validate_bundle_models(map_message(raw, registry=checked).bundle),
            max(2, args.per_round // 10),
        ),
    }
    if args.freeze:
        import gc

        validate_bundle(map_message(raw, registry=checked).bundle)
        validate_bundle_models(map_message(raw, registry=checked).bundle)
        gc.collect()
        gc.freeze()
    # first without hl7apy loaded: its large module-level tables make every garbage collection of the
    # process slower, which would be charged to whoever allocates next
    results = interleaved(
        {**conduit, "python-hl7 parse alone": (lambda: hl7.parse(text), args.per_round)}, args.rounds, clock
    )
    from hl7apy.parser import parse_message

    with_hl7apy = interleaved(
        {**conduit, "hl7apy parse alone": (lambda: parse_message(text), 2)}, max(3, args.rounds // 2), clock
    )
    results["hl7apy parse alone"] = with_hl7apy.pop("hl7apy parse alone")
    for name, ms in with_hl7apy.items():
        results[f"{name} (hl7apy loaded)"] = ms
    bundle = map_message(raw).bundle
    clock_name = ("CPU" if args.cpu else "wall") + (", gc.freeze()" if args.freeze else "")
    print(
        f"ORU^R01, 20 OBX -> {len(bundle['entry'])} Bundle entries; Python {platform.python_version()}; {clock_name} time"
    )
    for name, ms in results.items():
        print(f"{name:55s} {ms:8.2f} ms/message (median)")
    print(json.dumps({k: round(v, 3) for k, v in results.items()}))


if __name__ == "__main__":
    main()
