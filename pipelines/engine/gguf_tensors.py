"""The tensors of a GGUF file, one at a time, under the names transformers gives them.

Each read dequantises one tensor (gguf's dequantisers) and undoes what llama.cpp's converter
did to it (transformers' per-architecture tensor processors: Llama's q/k permutation), so the
loader can build a model of any precision from a GGUF file while holding at most one tensor
in float32 beside the weights already loaded.
"""

from __future__ import annotations

import numpy as np
import torch

from pipelines.models.gguf_file import EMBEDDING_TENSOR, GgufModel, open_reader


class GgufTensorReader:
    """The same interface as model_loader.TensorReader: `name in reader`, `reader.read(name)`."""

    def __init__(self, gguf: GgufModel, model):
        from transformers.modeling_gguf_pytorch_utils import (
            TENSOR_PROCESSORS,
            TensorProcessor,
        )

        self._processor = TENSOR_PROCESSORS.get(gguf.architecture, TensorProcessor)(config=gguf.config)
        self._to_hf = gguf_to_hf_names(model, gguf.architecture, gguf.config["num_hidden_layers"])
        reader = open_reader(gguf.path)
        self._tensors = {self._to_hf[t.name]: t for t in reader.tensors if t.name in self._to_hf}
        self._file = open(gguf.path, "rb")
        embedding = self._to_hf.get(EMBEDDING_TENSOR)
        if gguf.config.get("tie_word_embeddings") and embedding in self._tensors:
            # The output layer shares the embedding: int8 quantises its own copy from the same tensor.
            self._tensors.setdefault("lm_head.weight", self._tensors[embedding])

    def __contains__(self, name: str) -> bool:
        return name in self._tensors

    def read(self, name: str) -> torch.Tensor:
        from gguf import dequantize

        tensor = self._tensors[name]
        # The bytes are read into fresh memory, not through the reader's mapping of the file,
        # whose pages would stay counted in the worker's memory after the load.
        raw = np.empty(tensor.data.shape, dtype=tensor.data.dtype)
        self._file.seek(tensor.data_offset)
        if self._file.readinto(memoryview(raw).cast("B")) != raw.nbytes:
            raise OSError(f"{self._file.name}: could not read tensor {tensor.name}; the file is truncated")
        weights = dequantize(raw, tensor.tensor_type)
        result = self._processor.process(weights=weights, name=tensor.name, tensor_key_mapping=self._to_hf,
                                         parsed_parameters={"tensors": {}, "config": {}})
        return torch.from_numpy(np.ascontiguousarray(result.weights, dtype=np.float32))

    def close(self) -> None:
        self._tensors.clear()
        self._file.close()


def gguf_to_hf_names(model, architecture: str, layers: int) -> dict[str, str]:
    """GGUF tensor name -> transformers parameter name, from the model's own parameter names
    (a meta model will do) through gguf's name table, as transformers' loader maps them."""
    from gguf import MODEL_ARCH_NAMES, get_tensor_name_map

    arch = next(k for k, v in MODEL_ARCH_NAMES.items() if v == architecture)
    table = get_tensor_name_map(arch, layers)
    names = {}
    for hf_name in model.state_dict():
        base, dot, suffix = hf_name.rpartition(".")
        gguf_name = table.get_name(base) if suffix in ("weight", "bias") else None
        if gguf_name is not None:
            names[f"{gguf_name}.{suffix}"] = hf_name
    return names
