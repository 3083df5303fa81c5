"""Issue #12: the Multi30k prepare step (fairseq_plugins.translation.text prepare) checks every split before
writing anything; bad bytes / empty sentences / misaligned files -> one line naming file:line."""
import gzip

import pytest

pytest.importorskip("fairseq")

from fairseq_plugins.translation import text  # noqa: E402


def _raw(tmp_path, **override):
    raw = tmp_path / "raw"
    raw.mkdir()
    for stem in ("train", "val", "test_2016_flickr"):
        for lang in ("de", "en"):
            data = override.get(f"{stem}.{lang}", f"ein satz {stem}\nzwei {lang}\n".encode())
            (raw / f"{stem}.{lang}").write_bytes(data)
    return raw


@pytest.mark.parametrize("name, data, message", [
    ("test_2016_flickr.en", b"fine\ncaf\xe9\n", "test_2016_flickr.en:2: not UTF-8 text (byte 0xe9)"),
    ("val.de", b"eins\n\n", "val.de:2: empty sentence"),
    ("val.en", b"only one\n", "val: 2 de lines but 1 en lines"),
])
def test_bad_split_stops_before_anything_is_written(tmp_path, capsys, name, data, message):
    raw = _raw(tmp_path, **{name: data})
    out = tmp_path / "out"
    assert text.main(["prepare", "--raw-dir", str(raw), "--out-dir", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and err.endswith(message) and "\n" not in err
    assert not out.exists()


def test_read_raw_reads_gzip_and_truncates(tmp_path):
    raw = _raw(tmp_path)
    (raw / "train.de").unlink()
    with gzip.open(raw / "train.de.gz", "wb") as f:
        f.write("ein satz\nzwei de\n".encode())
    texts = text.read_raw(raw, max_train=1)
    assert texts["train"] == {"de": ["ein satz"], "en": ["ein satz train"]}
    assert texts["valid"]["en"] == ["ein satz val", "zwei en"]
