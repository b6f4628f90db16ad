"""Shared test fixtures: where the bundled samples and the public captures live."""
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "samples"
# Public captures beside the project (see ../shared/captures/SOURCES.md); absent in a user's clone.
SHARED = ROOT.parent / "shared" / "captures"


def sample_files():
    return sorted(p for p in SAMPLES.glob("*.pcap*") if p.is_file())


def shared_files():
    return sorted(p for p in SHARED.glob("*.pcap*")) if SHARED.is_dir() else []


@pytest.fixture
def shared_dir():
    if not SHARED.is_dir():
        pytest.skip("../shared/captures is not here (it is not part of the project)")
    return SHARED
