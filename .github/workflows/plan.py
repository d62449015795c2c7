"""gpu-bench's job matrix: `matrix=[{profile, variant}, ...]` for $GITHUB_OUTPUT.

Pull requests run the GPU smoke profile; pushes and manual runs the paper profile's runnable
variants (or the one asked for). Needs only PyYAML.
"""

import json
import sys

from tunebench.running.profile import runnable


def plan(event: str, wanted: str) -> list[dict[str, str]]:
    if event == "pull_request":
        return [{"profile": "gpu-smoke", "variant": v} for v in runnable("gpu-smoke")]
    variants = runnable("paper")
    if wanted:
        if wanted not in variants:
            sys.exit(f"paper has no runnable variant {wanted!r}: {', '.join(variants)}")
        variants = [wanted]
    return [{"profile": "paper", "variant": v} for v in variants]


if __name__ == "__main__":
    print("matrix=" + json.dumps(plan(sys.argv[1], sys.argv[2] if len(sys.argv) > 2 else "")))
