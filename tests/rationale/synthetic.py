"""The synthetic rationale tasks of the tests: :mod:`hardkuma_attention.rationale.synthetic`."""
from hardkuma_attention.rationale.synthetic import marker_examples, span_examples  # noqa: F401
