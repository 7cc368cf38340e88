"""starcoder-pipelines: Spark NLP-style batch code generation with StarCoder2.

The annotators are imported on first use, so that `pipelines.engine` stays free of Spark.
"""

__version__ = "0.1.0"
__all__ = ["DocumentAssembler", "StarCoderScorer", "StarCoderTransformer"]


def __getattr__(name):
    if name == "DocumentAssembler":
        from pipelines.annotators.document_assembler import DocumentAssembler

        return DocumentAssembler
    if name == "StarCoderTransformer":
        from pipelines.annotators.starcoder_transformer import StarCoderTransformer

        return StarCoderTransformer
    if name == "StarCoderScorer":
        from pipelines.annotators.starcoder_scorer import StarCoderScorer

        return StarCoderScorer
    raise AttributeError(f"module 'pipelines' has no attribute {name!r}")
