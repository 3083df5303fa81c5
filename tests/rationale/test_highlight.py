"""HTML and terminal highlighting tell exact-1, partial and zero gates apart."""
from hardkuma_attention.rationale.highlight import html_page, terminal_highlight, write_html


def test_terminal_plain_and_colour():
    tokens, gates = ["a", "very", "good", "film"], [0.0, 0.4, 1.0, 0.0]
    assert terminal_highlight(tokens, gates, color=False) == "a {very|0.40} [good] film"
    coloured = terminal_highlight(tokens, gates, color=True)
    assert "\033[1;30;43mgood\033[0m" in coloured and "\033[4;33mvery\033[0m" in coloured
    assert coloured.startswith("a ")


def test_html_classes_and_escape(tmp_path):
    page = html_page([{"tokens": ["<b>", "ok", "no"], "gates": [1.0, 0.5, 0.0], "gold_rationale": [True, False, False],
                       "label": 1, "prediction": 0, "id": "e1"}])
    assert '<span class="sel gold" title="z=1.000">&lt;b&gt;</span>' in page
    assert 'class="part" style="background: rgba(255,140,0,0.400)"' in page
    assert '<span title="z=0.000">no</span>' in page
    assert "selected 2/3" in page
    path = tmp_path / "sub" / "r.html"
    write_html(path, [{"tokens": ["x"], "gates": [1.0]}])
    assert path.read_text().startswith("<!DOCTYPE html>")
