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
    with pytest.raises(InvalidParamError, match="engine 'strict' runs dtypes float32, not 'int8'"):
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
        assert set(backend.forms) <= set(backends.FORMS) and backend.devices and backend.dtypes
        assert set(backend.dtypes) <= set(DTYPES) - {"auto"} and set(backend.devices) <= set(DEVICES) - {"auto"}
        assert all(field in names for field, _ in backend.refuses)
        assert backend.decoder_class().__name__.endswith("Decoder")
    assert backends.scoring_backend().scores
