"""fairseq NLI's GloVe loading reuses the rationale library's reader (one implementation)."""
import gzip

import pytest
import torch

pytest.importorskip("fairseq")

from fairseq_plugins.nli.embeddings import pretrained_embedding_matrix, read_glove  # noqa: E402


def _write(path, text):
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(text)
    else:
        path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.mark.parametrize("name", ["g.txt", "g.txt.gz"])
def test_wanted_words_first_row_wins(tmp_path, name):
    path = _write(tmp_path / name, "the 1 2 3\ncat 4 5 6\nthe 7 8 9\n")
    found = read_glove(path, ["the", "dog"], 3)
    assert set(found) == {"the"}
    assert torch.equal(found["the"], torch.tensor([1.0, 2.0, 3.0]))


def test_dimension_other_than_embed_dim_names_the_flag(tmp_path):
    path = _write(tmp_path / "g.txt", "the 1 2 3\n")
    with pytest.raises(ValueError, match=r"g\.txt:1: vectors have 3 values, --embed-dim is 4"):
        read_glove(path, ["the"], 4)


@pytest.mark.parametrize("text, line", [("the 1 2 3\ncat 4 x 6\n", 2), ("the 1 2 3\ncat 4 5\n", 2)])
def test_bad_rows_name_path_and_line(tmp_path, text, line):
    path = _write(tmp_path / "g.txt", text)
    with pytest.raises(ValueError, match=rf"g\.txt:{line}:"):
        read_glove(path, ["the", "cat"], 3)


def test_matrix_rows_unit_norm_padding_zero_and_known_vectors_kept(tmp_path):
    path = _write(tmp_path / "g.txt", "the 3 4\ncat 0 2\n")
    weight = pretrained_embedding_matrix(path, ["<pad>", "the", "cat", "oov"], padding_idx=0, dim=2)
    assert torch.equal(weight[0], torch.zeros(2))
    assert torch.allclose(weight[1], torch.tensor([0.6, 0.8]))
    assert torch.allclose(weight[2], torch.tensor([0.0, 1.0]))
    assert torch.allclose(weight[3].norm(), torch.tensor(1.0))
