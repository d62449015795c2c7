"""tunebench.running.provenance: what every result records about its software and hardware."""

from pathlib import Path

from tunebench.running.provenance import hardware, package_versions


def test_package_versions_name_python_and_the_pinned_stack():
    versions = package_versions()
    assert versions["python"].count(".") == 2
    assert versions["torch"].startswith("2.") and versions["dvc"]


def test_hardware_reports_the_flags_that_change_cpu_numerics():
    info = hardware()
    flags = Path("/proc/cpuinfo").read_text()
    assert info["cpu_bf16_flags"] == sorted(f for f in ("amx_bf16", "avx512_bf16")
                                            if f" {f}" in flags)
    assert info["torch_cpu_capability"] in {"DEFAULT", "AVX2", "AVX512", "ZVECTOR", "NO AVX"}
    assert info["torch_threads"] >= 1 and info["cpu"]
