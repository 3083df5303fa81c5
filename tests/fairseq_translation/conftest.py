import pytest

pytest.importorskip("fairseq")
