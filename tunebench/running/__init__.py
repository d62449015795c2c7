"""Running the benchmark: params checks, profiles, launch, the Hub, provenance, perf, the
budget ledger, the generated README sections, the trade-off and dataset subsets."""
