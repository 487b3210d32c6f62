"""The CLI's document discovery and reading: folders by type, per-file errors, HTML to text, titles."""

from pathlib import Path

import pytest

from llama_stack_milvus.cli.documents import DocumentError, expand, html_to_text, load, text_title

CORPUS = Path(__file__).resolve().parents[1] / "data" / "corpus"


def test_folders_are_walked_recursively_for_supported_types_only(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    (tmp_path / "a.md").write_text("# A\n")
    (tmp_path / "sub" / "b.rst").write_text("B\n=\n")
    (tmp_path / "sub" / "deeper" / "c.HTML").write_text("<p>c</p>")
    (tmp_path / "sub" / "image.png").write_bytes(b"\x89PNG")
    found = [item.path.name for item in expand([str(tmp_path)])]
    assert found == ["a.md", "b.rst", "c.HTML"]


def test_a_missing_path_is_reported_and_the_rest_still_comes(tmp_path):
    (tmp_path / "a.txt").write_text("text")
    items = list(expand([str(tmp_path / "nope.md"), str(tmp_path / "a.txt")]))
    assert isinstance(items[0], DocumentError) and "nope.md: no such file" in str(items[0])
    assert items[1].path.name == "a.txt"


def test_unsupported_and_undecodable_files_raise_document_errors(tmp_path):
    image = tmp_path / "photo.png"
    image.write_bytes(b"\x89PNG")
    latin1 = tmp_path / "old.txt"
    latin1.write_bytes("caf\xe9".encode("latin-1"))
    (candidate_image,) = expand([str(image)])
    (candidate_latin1,) = expand([str(latin1)])
    with pytest.raises(DocumentError, match=r"unsupported type \.png"):
        load(candidate_image)
    with pytest.raises(DocumentError, match="not UTF-8"):
        load(candidate_latin1)


def test_html_pages_are_uploaded_as_their_visible_text():
    page = CORPUS / "python-faq-html" / "installed.html"
    (candidate,) = expand([str(page)])
    document = load(candidate)
    text = document.data.decode()
    assert document.filename == "installed.txt"
    assert document.title.startswith("“Why is Python Installed on my Computer?” FAQ")
    assert "Can I delete Python?" in text
    assert "<div" not in text and "¶" not in text and "function()" not in text
    assert document.attributes == {"source": str(page.resolve()), "title": document.title, "sha256": document.sha256}


def test_titles_come_from_the_first_heading():
    assert text_title((CORPUS / "docker-cli-md" / "logs.md").read_text()) == "logs"
    assert text_title((CORPUS / "python-tutorial-rst" / "venv.rst").read_text()) == (
        "Virtual Environments and Packages"
    )
    assert text_title("no heading here") is None


def test_nested_navigation_is_dropped_whole():
    title, text = html_to_text(
        "<html><head><title>T</title></head><body><div role='navigation'><div>menu</div>more menu</div>"
        "<p>body text</p><script>var x;</script></body></html>"
    )
    assert title == "T"
    assert text == "body text"
