import os
import sys
from pathlib import Path

import pytest

# Workers must run this interpreter, with this checkout importable.
ROOT = Path(__file__).resolve().parent.parent
os.environ["PYSPARK_PYTHON"] = sys.executable
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

DATA = Path(__file__).resolve().parent / "data"


def pytest_collection_modifyitems(items):
    """The spark tier is every test that uses the shared session (see pytest.ini)."""
    for item in items:
        if "spark" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.spark)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """A tiny random StarCoder2 model (GQA, sliding window 64, real vocabulary) with the real tokenizer.

    Weights are drawn wider than the usual init so that greedy output varies from token to token.
    """
    from devtools.model_builder import build_random_model

    return build_random_model(tmp_path_factory.mktemp("models") / "tiny", "tiny", seed=0, initializer_range=0.3)


@pytest.fixture(scope="session")
def engine(tiny_model_dir):
    from pipelines.engine.engine import GenerationEngine
    from pipelines.engine.params import ModelSpec

    return GenerationEngine.load(ModelSpec(source=str(tiny_model_dir)))


@pytest.fixture(scope="session")
def load_log(tmp_path_factory):
    path = tmp_path_factory.mktemp("loads") / "loads.txt"
    os.environ["STARCODER_PIPELINES_LOAD_LOG"] = str(path)
    return path


@pytest.fixture(scope="session")
def faults_file(tmp_path_factory):
    """Workers read injected faults from this file (see pipelines/faults.py); absent means none."""
    path = tmp_path_factory.mktemp("faults") / "faults.json"
    os.environ["STARCODER_PIPELINES_FAULTS"] = f"@{path}"
    return path


@pytest.fixture
def inject_faults(faults_file):
    import json

    def inject(**faults):
        faults_file.write_text(json.dumps(faults))

    yield inject
    faults_file.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def spark(tmp_path_factory, load_log, faults_file):
    from pyspark.sql import SparkSession

    from pipelines.jobs.session import with_master

    session = (
        with_master(SparkSession.builder, "local[2,3]")  # 2 cores; a failed task is retried (3 attempts)
        .appName("starcoder-pipelines-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.warehouse.dir", str(tmp_path_factory.mktemp("warehouse")))
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
