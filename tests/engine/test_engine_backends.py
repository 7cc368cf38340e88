"""Engines are rows of one table: the engine loads the row's decoder, auto chooses from the
table, and a row's refusals and abilities are checked from the row alone."""

import pytest

from pipelines.engine import backends
from pipelines.engine.backends import (
    BACKENDS,
    Backend,
    InvalidParamError,
    choose_backend,
)
from pipelines.engine.engine import GenerationEngine
from pipelines.engine.params import DEVICES, DTYPES, GenerationParams, ModelSpec

# A second row for the PyTorch decoder that refuses one param: adding it is all a backend takes.
STRICT = Backend(name="strict", decoder="pipelines.engine.torch_decoder:TorchDecoder", forms=("safetensors",),
                 devices=("cpu",), dtypes=("float32",), refuses=(("repetition_penalty", "it has no penalties"),))


@pytest.fixture
def strict_first(monkeypatch):
    table = {"strict": STRICT, **BACKENDS}
    monkeypatch.setattr(backends, "BACKENDS", table)
    return table


def test_the_engine_loads_the_decoder_of_the_row_auto_chooses(strict_first, tiny_model_dir):
    engine = GenerationEngine.load(ModelSpec(source=str(tiny_model_dir)))
    assert engine.backend is STRICT and type(engine.decoder).__name__ == "TorchDecoder"
    params = GenerationParams(max_output_length=4)
    assert engine.complete(["def add(a, b):"], params)[0][0].completion_tokens == 4
    with pytest.raises(InvalidParamError, match="repetitionPenalty is not supported by engine 'strict': it has "
                                                "no penalties; use engine 'pytorch' for it"):
        engine.complete(["x = 1"], GenerationParams(repetition_penalty=1.2))


def test_auto_skips_a_row_that_refuses_the_params_or_the_device(strict_first, tiny_model_dir):
    source = str(tiny_model_dir)
    assert choose_backend(source).name == "strict"
    assert choose_backend(source, params=GenerationParams(repetition_penalty=1.2)).name == "pytorch"
    assert choose_backend(source, device="cuda").name == "pytorch"
    assert choose_backend(source, dtype="int8").name == "pytorch"
    with pytest.raises(InvalidParamError, match="engine 'strict' runs dtypes float32, not dtype 'int8'"):
        choose_backend(source, "strict", dtype="int8")
    with pytest.raises(InvalidParamError, match="repetitionPenalty is not supported by engine 'strict'"):
        choose_backend(source, "strict", params=GenerationParams(repetition_penalty=1.2))


def test_the_annotator_pins_the_chosen_engine_for_its_tasks(strict_first, tiny_model_dir):
    from pipelines import StarCoderScorer, StarCoderTransformer

    generator = StarCoderTransformer(modelSource=str(tiny_model_dir))
    assert generator.getEngine() == "auto" and generator.model_spec().engine == "strict"
    assert generator.setRepetitionPenalty(1.3).model_spec().engine == "pytorch"
    scorer = StarCoderScorer(modelSource=str(tiny_model_dir))
    assert scorer.model_spec().engine == "pytorch"  # auto skips a row that cannot score
    with pytest.raises(InvalidParamError, match="StarCoderScorer cannot run on engine 'strict': it returns no logits"):
        scorer.setEngine("strict").model_spec()


def test_every_row_names_forms_devices_and_params_the_engine_knows():
    names = GenerationParams.PARAM_NAMES
    for backend in BACKENDS.values():
        assert set(backend.forms) <= set(backends.FORMS) and backend.devices
        assert backend.dtypes or backend.weights_as_file  # no dtype choice: the file's own types
        assert set(backend.dtypes) <= set(DTYPES) - {"auto"} and set(backend.devices) <= set(DEVICES) - {"auto"}
        assert all(field in names for field, _ in backend.refuses)
        assert backend.decoder_class().__name__.endswith("Decoder")
    assert backends.scoring_backend().scores


@pytest.fixture(scope="module")
def weights_and_export(tmp_path_factory):
    """The demo model's safetensors with its OpenVINO export beside them, in one directory."""
    import shutil

    from pipelines.models.bundled import DEMO_MODEL, DEMO_MODEL_OPENVINO

    d = tmp_path_factory.mktemp("both") / "demo"
    shutil.copytree(DEMO_MODEL, d)
    for f in DEMO_MODEL_OPENVINO.glob("openvino_*"):
        shutil.copy(f, d / f.name)
    return str(d)


def test_auto_runs_an_openvino_export_beside_the_weights_unless_the_params_need_pytorch(weights_and_export):
    assert backends.model_forms(weights_and_export) == ("safetensors", "openvino")
    backend, why = backends.backend_choice(weights_and_export)
    assert backend.name == "openvino" and why == "engine auto chose 'openvino', which runs an OpenVINO export"
    backend, why = backends.backend_choice(weights_and_export, params=GenerationParams(ignore_token_ids=[5]))
    assert backend.name == "pytorch"
    assert why.startswith("engine auto chose 'pytorch', which runs a Hugging Face directory with *.safetensors "
                          "weights (not 'openvino': ignoreTokenIds is not supported by engine 'openvino'")
    assert choose_backend(weights_and_export, scoring="StarCoderScorer").name == "pytorch"
    assert choose_backend(weights_and_export, device="cuda").name == "pytorch"


def test_auto_passes_over_an_engine_that_is_not_installed_and_says_so(weights_and_export, monkeypatch):
    monkeypatch.setattr(backends, "is_installed", lambda module: module != "openvino_genai")
    backend, why = backends.backend_choice(weights_and_export)
    assert backend.name == "pytorch"
    assert why.endswith("('openvino' would run it but openvino_genai is not installed (pip install "
                        "'starcoder-pipelines[openvino]'))")
    with pytest.raises(InvalidParamError, match=r"engine 'openvino' needs the openvino_genai package, which is not "
                                                r"installed here: pip install 'starcoder-pipelines\[openvino\]'"):
        choose_backend(weights_and_export, "openvino")
    from pipelines.models.bundled import DEMO_MODEL_OPENVINO

    with pytest.raises(InvalidParamError, match="no installed engine runs .*demo-model-openvino: 'openvino' would "
                                                "run it but openvino_genai is not installed"):
        choose_backend(str(DEMO_MODEL_OPENVINO))


def test_the_annotator_logs_its_engine_and_dtype_once(weights_and_export, caplog, monkeypatch):
    import logging

    from pipelines import StarCoderTransformer
    from pipelines.annotators import model_params

    monkeypatch.setattr(model_params, "_LOGGED_CHOICES", set())  # as in a fresh driver
    with caplog.at_level(logging.INFO, logger="pipelines.model"):
        for _ in range(3):  # as a job does: a new stage for every shard
            annotator = StarCoderTransformer(modelSource=weights_and_export)
            annotator.model_spec()
            annotator.log_choice()
    lines = [r.getMessage() for r in caplog.records if r.name == "pipelines.model"]
    assert lines == [f"StarCoderTransformer runs {weights_and_export}: engine auto chose 'openvino', which runs an "
                     "OpenVINO export; dtype auto: the export's own weights, computed in the OpenVINO CPU plugin's "
                     "default precision (bfloat16 on CPUs with AVX512-BF16 or AMX, else float32)"]
