"""StarCoderTransformer's generation params, made from their one declaration.

Each field of `engine.params.GenerationParams` declares its default, the annotator param that
sets it (Spark NLP's name) and its doc; here they become pyspark.ml Params with Spark NLP's
setters and getters (`setMaxOutputLength`, `getTopP`, ...), and `generation_params()` reads them
back into the GenerationParams the engine runs with. A new generation setting is one field there.
"""

from __future__ import annotations

import random
import types
import typing
from dataclasses import fields

from pyspark.ml.param import Param, Params, TypeConverters

from pipelines.engine.params import GenerationParams
from pipelines.prompts.stop_presets import stop_strings

# Declared by HasModelParams, because the scorer shares it (there it is the scoring window).
DECLARED_WITH_THE_MODEL = {"max_input_length"}


def _converter(annotation):
    """pyspark's type converter for a GenerationParams field's type."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        annotation = next(a for a in typing.get_args(annotation) if a is not type(None))
    if typing.get_origin(annotation) is tuple:
        return TypeConverters.toListInt if typing.get_args(annotation)[0] is int else TypeConverters.toListString
    return {bool: TypeConverters.toBoolean, int: TypeConverters.toInt, float: TypeConverters.toFloat}[annotation]


def _declared():
    """(field, param name, doc, converter) of every generation param the annotator declares."""
    hints = typing.get_type_hints(GenerationParams)
    return [(f, f.metadata["param"], f.metadata["doc"], _converter(hints[f.name]))
            for f in fields(GenerationParams) if f.name not in DECLARED_WITH_THE_MODEL]


def generation_defaults() -> dict:
    """The declared defaults as Params hold them (lists, not tuples; an unset seed has none)."""
    return {name: list(f.default) if isinstance(f.default, tuple) else f.default
            for f, name, _, _ in _declared() if f.default is not None}


class HasGenerationParams(Params):
    """The generation params (made below from GenerationParams' declarations)."""

    def generation_params(self) -> GenerationParams:
        values = {f.name: self.getOrDefault(f.metadata["param"]) if self.isDefined(f.metadata["param"]) else None
                  for f in fields(GenerationParams)}
        values["stop_strings"] = stop_strings(self.getStopPreset(), values["stop_strings"])
        if values["random_seed"] is None and values["do_sample"]:
            # Chosen once on the driver so that retried tasks draw the same samples.
            values["random_seed"] = random.SystemRandom().randrange(1 << 31)
        return GenerationParams(**values)


def _accessors(name: str, doc: str):
    def setter(self, value):
        return self._set(**{name: value})

    def getter(self):
        return self.getOrDefault(name) if self.isDefined(name) else None

    capitalised = name[0].upper() + name[1:]
    setter.__name__, setter.__doc__ = f"set{capitalised}", doc
    getter.__name__, getter.__doc__ = f"get{capitalised}", doc
    return setter, getter


for _field, _name, _doc, _convert in _declared():
    setattr(HasGenerationParams, _name, Param(Params._dummy(), _name, _doc, typeConverter=_convert))
    _set, _get = _accessors(_name, _doc)
    setattr(HasGenerationParams, _set.__name__, _set)
    setattr(HasGenerationParams, _get.__name__, _get)
