import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
# Judge validations, GGUF conversions and fetched data sets go to a fresh cache, not the user's.
os.environ["DISALIGN_CACHE"] = tempfile.mkdtemp(prefix="disalign-test-cache-")

import pytest


@pytest.fixture(scope="session")
def quick_zoo(tmp_path_factory):
    """The --quick zoo, built once for every end-to-end test (about a minute on 2 cores)."""
    from disalign.world import build_zoo, make_config

    zoo = tmp_path_factory.mktemp("zoo") / "quick"
    build_zoo(zoo, make_config(quick=True))
    return zoo
