"""Wikipedia XML dumps -> plain-text documents: a hand-made dump with every construct the stripper
handles, and the real shortened English dump from gensim's wheel."""
from __future__ import annotations

import bz2
import importlib.util
import re

import pytest

from fast_electra_ds.data.text import iter_documents
from fast_electra_ds.data.wiki import iter_wiki_documents, strip_wikitext, wiki_test_dump, write_wiki_corpus
from fast_electra_ds.errors import UserError

PROSE = " ".join(["Filler words keep this article above the stub threshold."] * 8)

ARTICLE = f"""{{{{Infobox person|name=Ada {{{{nowrap|Lovelace}}}}|born=1815}}}}
'''Ada Lovelace''' was an [[England|English]] [[mathematician]].&lt;ref name="a"&gt;Some source, p. 3&lt;/ref&gt; She wrote notes.&lt;ref name="b" /&gt;
<!-- a hidden comment -->
[[File:Ada.jpg|thumb|A portrait of [[Ada Lovelace|Ada]] [by an artist]]]
== Early life ==
She was born in [[London]] ({{{{lang-fr|Londres}}}}) and studied [http://example.org mathematics] with ''tutors''.
{{| class="wikitable"
|-
! Year !! Event
|-
| 1815 || born
|}}
* A list item with a [[Charles Babbage|colleague]].
{PROSE}
== References ==
* A reference that must not appear.
[[Category:Mathematicians]]
[[fr:Ada Lovelace]]"""


def page(title: str, text: str, ns: int = 0, redirect: str | None = None) -> str:
    redirect_tag = f'<redirect title="{redirect}" />' if redirect else ""
    return (f"<page><title>{title}</title><ns>{ns}</ns><id>1</id>{redirect_tag}<revision><id>2</id>"
            f'<text xml:space="preserve">{text}</text></revision></page>')


def dump(*pages: str) -> str:
    return ('<mediawiki xmlns="http://www.mediawiki.org/xml/export-0.10/" version="0.10"><siteinfo>'
            "<sitename>Wikipedia</sitename></siteinfo>" + "".join(pages) + "</mediawiki>")


def xml_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


@pytest.fixture
def small_dump(tmp_path):
    path = tmp_path / "small-pages-articles.xml.bz2"
    path.write_bytes(bz2.compress(dump(
        page("Ada Lovelace", xml_escape(ARTICLE)),
        page("AccessibleComputing", "#REDIRECT [[Computer accessibility]]", redirect="Computer accessibility"),
        page("Talk:Ada Lovelace", xml_escape(PROSE), ns=1),
        page("Stub", "Too short to keep."),
    ).encode()))
    return path


def test_hand_made_dump_keeps_the_prose_and_drops_the_markup(small_dump):
    stats: dict = {}
    documents = list(iter_wiki_documents(small_dump, stats=stats))
    assert stats == {"pages": 4, "redirects": 1, "other_namespace": 1, "too_short": 1, "documents": 1,
                     "words": len(documents[0].split())}
    lines = documents[0].splitlines()
    assert lines[0] == "Ada Lovelace was an English mathematician. She wrote notes."
    assert lines[1] == "She was born in London and studied mathematics with tutors."
    assert lines[2] == "A list item with a colleague."
    assert lines[3] == PROSE
    assert len(lines) == 4  # infobox, comment, file+caption, heading, table, references, category, interwiki gone


@pytest.mark.parametrize("markup, expected", [
    ("a {{outer|{{inner|x}}}} b", "a b"),
    ("[[Target|shown text]] and [[plain]]", "shown text and plain"),
    ("x [[Image:a.png|thumb|caption with [[link]] and [brackets]]] y", "x y"),
    ("see [https://example.org/page the site] and https://bare.example.org", "see the site and"),
    ("E = mc<math>E=mc^2</math> here<ref>cite</ref>.", "E = mc here."),
    ("&nbsp;&quot;quoted&quot; &amp; more", '"quoted" & more'),
    ("'''bold''' and ''italic'' __NOTOC__", "bold and italic"),
    ("literal {{ brace never closed\nnext line", "literal\nnext line"),
])
def test_strip_wikitext_cases(markup, expected):
    assert strip_wikitext(markup) == expected


def test_iter_documents_recognises_a_dump_by_its_content(small_dump, tmp_path):
    renamed = tmp_path / "dump-without-xml-suffix.bz2"  # gensim's file name hides the .xml
    renamed.write_bytes(small_dump.read_bytes())
    assert list(iter_documents(renamed)) == list(iter_wiki_documents(small_dump))


def test_broken_dump_is_a_user_error(tmp_path):
    truncated = tmp_path / "broken.xml"
    truncated.write_text(dump(page("A", PROSE))[:-40])
    with pytest.raises(UserError, match="not a valid MediaWiki XML dump"):
        list(iter_wiki_documents(truncated))
    with pytest.raises(UserError, match="does not exist"):
        list(iter_wiki_documents(tmp_path / "missing.xml.bz2"))
    no_pages = tmp_path / "empty.xml"
    no_pages.write_text(dump())
    with pytest.raises(UserError, match="no <page> elements"):
        list(iter_wiki_documents(no_pages))


def test_real_shortened_english_dump(tmp_path):
    if importlib.util.find_spec("gensim") is None:  # not imported: --no-deps leaves it unimportable
        pytest.skip("pip install --no-deps gensim provides the dump")
    stats = write_wiki_corpus(wiki_test_dump(), tmp_path / "wiki.txt")
    documents = list(iter_documents(tmp_path / "wiki.txt"))
    # 206 pages: 99 redirects, 1 outside the article namespace, 106 articles (counted in the XML).
    assert (stats["pages"], stats["redirects"], stats["other_namespace"]) == (206, 99, 1)
    assert stats["documents"] == len(documents) == 106 - stats["too_short"]
    assert 300_000 < stats["words"] == sum(len(d.split()) for d in documents) < 500_000
    text = "\n".join(documents)
    for markup in ("{{", "}}", "[[", "]]", "<ref", "</ref", "{|", "|}", "==", "''", "&lt;", "&amp;", "&quot;",
                   "http://", "https://", "Category:", "thumb|"):
        assert markup not in text, markup
    assert not re.search(r"</?(?:ref|div|span|small|sup|sub|br|math|gallery)\b", text)
    assert documents[0].startswith("Anarchism is a political philosophy")
