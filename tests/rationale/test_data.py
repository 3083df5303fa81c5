"""Readers on tiny inline fixtures, including malformed lines (errors must name file:line)."""
import gzip
import json

import pytest

from hardkuma_attention.rationale.data import (
    DataFormatError,
    mask_to_spans,
    parse_ptb_tree,
    read_beer,
    read_beer_annotations,
    read_eraser,
    read_examples,
    read_jsonl,
    read_sst,
    read_tsv,
    spans_to_mask,
)

SST = """(3 (2 It) (4 (4 (2 's) (4 lovely)) (2 .)))
(1 (2 A) (1 (1 dull) (2 film)))
(2 (2 Just) (2 okay))
"""


def write(tmp_path, name, text):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_parse_ptb_tree_leaves_and_labels():
    root, tokens, labels = parse_ptb_tree("(3 (2 It) (4 (4 (2 's) (4 lovely)) (2 .)))")
    assert root == 3
    assert tokens == ["It", "'s", "lovely", "."]
    assert labels == [2, 2, 4, 2]


def test_read_sst_five_class_and_binary(tmp_path):
    p = write(tmp_path, "train.txt", SST)
    five = read_sst(p)
    assert [ex.label for ex in five] == [3, 1, 2]
    assert five[1].tokens == ["A", "dull", "film"] and five[1].token_labels == [2, 1, 2]
    assert five[0].id == "train.txt:1"
    binary = read_sst(p, binary=True)
    assert [ex.label for ex in binary] == [1, 0]  # neutral dropped
    assert read_examples(p, "sst2")[0].label == 1


@pytest.mark.parametrize("bad", ["(3 (2 It) (4 lovely)", "(x (2 It))", "(3 (2 It)) extra", "(7 (2 a))"])
def test_read_sst_malformed_names_line(tmp_path, bad):
    p = write(tmp_path, "bad.txt", SST + bad + "\n")
    with pytest.raises(DataFormatError, match=r"bad\.txt:4:"):
        read_sst(p)


def make_eraser(tmp_path, lines, doc="a b c d e f\ng h i j\n"):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "d1.txt").write_text(doc)
    return write(tmp_path, "val.jsonl", "\n".join(json.dumps(x) if not isinstance(x, str) else x for x in lines) + "\n")


def test_read_eraser_evidence_spans(tmp_path):
    rec = {"annotation_id": "d1.txt", "classification": "POS",
           "evidences": [[{"docid": "d1.txt", "start_token": 1, "end_token": 3, "text": "b c"}],
                         [{"docid": "d1.txt", "start_token": 7, "end_token": 8, "text": "h"}]]}
    p = make_eraser(tmp_path, [rec])
    (ex,) = read_eraser(p)
    assert ex.tokens == list("abcdefghij") and ex.label == "POS" and ex.id == "d1.txt"
    assert mask_to_spans(ex.rationale) == [(1, 3), (7, 8)]


@pytest.mark.parametrize(
    "bad, message",
    [
        ("{not json", "invalid JSON"),
        ({"annotation_id": "d1.txt"}, "missing field 'classification'"),
        ({"annotation_id": "d1.txt", "classification": "NEG",
          "evidences": [[{"docid": "d1.txt", "start_token": 5, "end_token": 99}]]}, "outside document"),
        ({"annotation_id": "nope.txt", "classification": "NEG", "evidences": []}, "not found"),
    ],
)
def test_read_eraser_malformed(tmp_path, bad, message):
    good = {"annotation_id": "d1.txt", "classification": "POS", "evidences": []}
    p = make_eraser(tmp_path, [good, bad])
    with pytest.raises(DataFormatError, match=rf"val\.jsonl:2: .*{message}"):
        read_eraser(p)


def test_read_beer_and_annotations(tmp_path):
    p = tmp_path / "reviews.aspect0.train.txt.gz"
    with gzip.open(p, "wt") as f:
        f.write("0.8 0.6 0.7 0.9 0.5\tgolden color , nice head\n0.2 0.4 0.3 0.1 0.2\tmurky brown mess\n")
    ex = read_beer(p, aspect="aroma")
    assert [e.label for e in ex] == [0.6, 0.4] and ex[1].tokens == ["murky", "brown", "mess"]
    ann = write(tmp_path, "annotations.json", json.dumps(
        {"x": ["golden", "color", ",", "nice", "aroma"], "y": [0.8, 0.6, 0.7, 0.9, 0.5],
         "0": [[0, 2]], "1": [[3, 5]], "2": [], "3": [], "4": []}) + "\n")
    (a0,) = read_beer_annotations(ann, 0)
    (a1,) = read_beer_annotations(ann, "smell")
    assert a0.rationale == [True, True, False, False, False] and a0.label == 0.8
    assert a1.rationale == [False, False, False, True, True] and a1.label == 0.6


@pytest.mark.parametrize("bad, message", [("0.1 0.2 no tab", "scores<TAB>text"), ("0.1 x\ttext", "numbers"),
                                          ("0.1\ttext", "aspect 2")])
def test_read_beer_malformed(tmp_path, bad, message):
    p = write(tmp_path, "beer.txt", "0.1 0.2 0.3 0.4 0.5\tok text\n" + bad + "\n")
    with pytest.raises(DataFormatError, match=rf"beer\.txt:2: .*{message}"):
        read_beer(p, 2)


def test_read_beer_annotations_bad_span(tmp_path):
    p = write(tmp_path, "ann.json", json.dumps({"x": ["a", "b"], "y": [0.1] * 5, "0": [[1, 4]]}) + "\n")
    with pytest.raises(DataFormatError, match=r"ann\.json:1: .*outside"):
        read_beer_annotations(p, 0)


def test_generic_jsonl_and_tsv(tmp_path):
    j = write(tmp_path, "d.jsonl", '{"text": "a great movie", "label": "pos", "rationale": [[1, 2]]}\n\n'
                                   '{"tokens": ["bad"], "label": "neg", "id": "x7"}\n')
    ex = read_jsonl(j)
    assert ex[0].tokens == ["a", "great", "movie"] and ex[0].rationale == [False, True, False]
    assert ex[1].id == "x7" and ex[1].rationale is None
    t = write(tmp_path, "d.tsv", "label\ttext\trationale\npos\ta great movie\t1:2\nneg\tso bad\t\n")
    ex = read_tsv(t)
    assert [e.label for e in ex] == ["pos", "neg"] and ex[0].rationale == [False, True, False]


@pytest.mark.parametrize("line, message", [('{"label": 1}', "missing field 'text'"),
                                           ('{"text": "a b", "label": 1, "rationale": [[0, 5]]}', "outside"),
                                           ('{"text": "a b"}', "missing field 'label'"),
                                           ("[1, 2]", "JSON object")])
def test_generic_jsonl_malformed(tmp_path, line, message):
    p = write(tmp_path, "g.jsonl", '{"text": "fine", "label": 0}\n' + line + "\n")
    with pytest.raises(DataFormatError, match=rf"g\.jsonl:2: .*{message}"):
        read_jsonl(p)


def test_generic_tsv_malformed(tmp_path):
    with pytest.raises(DataFormatError, match=r"h\.tsv:1: .*header"):
        read_tsv(write(tmp_path, "h.tsv", "sentence\tlabel\nx\t1\n"))
    with pytest.raises(DataFormatError, match=r"c\.tsv:3: .*columns"):
        read_tsv(write(tmp_path, "c.tsv", "text\tlabel\na\t1\nb\t1\textra\n"))


def test_spans_mask_round_trip():
    mask = [False, True, True, False, True]
    assert mask_to_spans(mask) == [(1, 3), (4, 5)]
    assert spans_to_mask([(1, 3), (4, 5)], 5) == mask
    assert mask_to_spans([0.0, 0.3, 1.0, 0.0]) == [(1, 3)]


def test_unknown_format():
    with pytest.raises(ValueError, match="--format"):
        read_examples("x", "csv")
