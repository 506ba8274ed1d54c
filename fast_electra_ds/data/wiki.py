"""Wikipedia XML dumps (`pages-articles*.xml[.bz2]`) as plain-text documents.

The dump is streamed (ElementTree.iterparse; bz2/gz decompressed on the fly), so memory stays flat
for any dump size. Each main-namespace article's wikitext is reduced to its prose by
`strip_wikitext`: templates, references, comments, tables, files/images/categories and
interlanguage links, math/gallery blocks and headings are dropped; links become their text; bold
and italic quotes and HTML tags go; the trailing reference sections ("References", "See also",
"External links", ...) are cut. Redirects, non-article namespaces and pages with fewer than
`min_words` words after stripping are skipped.

The shortened English dump inside gensim's wheel (`wiki_test_dump()`) is a small real corpus for
tests and benchmarks: 206 pages from 2016, about half of them redirects. The rules here are
"reasonable", not a full MediaWiki parser (no template expansion: a template's output is lost).
"""
from __future__ import annotations

import bz2
import gzip
import html
import importlib.util
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Iterator, MutableMapping

from ..errors import UserError
from ..runtime.temp_dirs import write_atomically

GENSIM_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"
MIN_WORDS = 50  # a page shorter than this after stripping is a stub, a list or a disambiguation page

# Sections after which an article holds only references and links, not prose.
TRAILING_SECTIONS = {"references", "see also", "external links", "further reading", "notes", "bibliography",
                     "sources", "footnotes", "citations", "notes and references", "works cited"}
# [[Prefix:...]] links that are not prose: media, categories; two/three-letter prefixes are other wikis.
DROPPED_LINK_PREFIXES = {"file", "image", "media", "category", "wikipedia", "wp", "wikt", "wiktionary",
                         "commons", "s", "q", "n", "b", "v", "meta", "special", "help", "portal", "template", "user"}
# Tags whose whole content is dropped (not prose, or a reference).
DROPPED_BLOCKS = ("ref", "math", "gallery", "timeline", "score", "syntaxhighlight", "source", "chem", "hiero",
                  "imagemap", "mapframe", "graph", "templatedata", "references")

_COMMENT = re.compile(r"<!--.*?(-->|\Z)", re.S)
_SELF_CLOSING_REF = re.compile(r"<ref\b[^>]*/>", re.I)
_BLOCK = re.compile(r"<(%s)\b[^>]*>.*?</\1\s*>" % "|".join(DROPPED_BLOCKS), re.I | re.S)
_INNER_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_INNER_TABLE = re.compile(r"\{\|(?:(?!\{\|).)*?\|\}", re.S)
_INNER_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_MEDIA_LINK_START = re.compile(r"\[\[\s*(?:file|image|media)\s*:", re.I)
_UNCLOSED = re.compile(r"(\{\{|\[\[).*$", re.M)
_EXTERNAL_LINK = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+\s*([^\]]*)\]")
_BARE_URL = re.compile(r"https?://\S+")
_HEADING = re.compile(r"^(=+)\s*(.*?)\s*\1\s*$")
_TAG = re.compile(r"</?[a-zA-Z][^>]*>")
_QUOTES = re.compile(r"'{2,}")
_MAGIC_WORD = re.compile(r"__[A-Z]+__")
_EMPTY_BRACKETS = re.compile(r"\(\s*[,;:]?\s*\)")
_SPACE_BEFORE_PUNCTUATION = re.compile(r"\s+([,.;:!?)])")
_SPACES = re.compile(r"[ \t\u00a0]+")


def _repeat(pattern: re.Pattern, replacement, text: str) -> str:
    """Apply a substitution until nothing changes: innermost-first removal of nested constructs."""
    while True:
        text, count = pattern.subn(replacement, text)
        if count == 0:
            return text


def _drop_media_links(text: str) -> str:
    """Remove [[File:...]] / [[Image:...]] with their captions, counting brackets: a caption may hold
    links and single brackets that a non-nesting pattern would cut short."""
    pieces, position = [], 0
    for match in _MEDIA_LINK_START.finditer(text):
        if match.start() < position:  # inside a media link already removed
            continue
        depth, single, index = 0, 0, match.start()
        while index < len(text):
            if text.startswith("[[", index):
                depth, index = depth + 1, index + 2
            elif text[index] == "[":
                single, index = single + 1, index + 1
            elif text[index] == "]" and single:  # "[note]]]": the single bracket closes first
                single, index = single - 1, index + 1
            elif text.startswith("]]", index):
                depth, index = depth - 1, index + 2
                if depth == 0:
                    break
            else:
                index += 1
        pieces.append(text[position:match.start()])
        position = index
    pieces.append(text[position:])
    return "".join(pieces)


def _link_text(match: re.Match) -> str:
    target, _, label = match.group(1).partition("|")
    prefix, colon, _ = target.partition(":")
    if colon and (prefix.strip().lower() in DROPPED_LINK_PREFIXES or re.fullmatch(r"[a-z]{2,3}(-[a-z]+)?", prefix.strip())):
        return ""
    if not colon and target.startswith(":"):  # [[:Category:X]] shows the link
        target = target[1:]
    text = label if label else target
    return text.split("|")[-1]  # [[a|b|c]] (rare) shows the last part


def strip_wikitext(text: str) -> str:
    """The prose of one article's wikitext: one line per paragraph or list item, no blank lines."""
    text = html.unescape(text)  # &lt;ref&gt; in some dumps, &nbsp; in others
    text = _COMMENT.sub("", text)
    text = _SELF_CLOSING_REF.sub("", text)
    text = _BLOCK.sub("", text)
    text = _repeat(_INNER_TEMPLATE, "", text)
    text = _repeat(_INNER_TABLE, "", text)
    text = _drop_media_links(text)
    text = _repeat(_INNER_LINK, _link_text, text)
    text = _UNCLOSED.sub("", text)  # an unbalanced {{ or [[ (broken markup, literal braces) ends its line
    text = _EXTERNAL_LINK.sub(lambda m: m.group(1), text)
    text = _BARE_URL.sub("", text)
    text = _TAG.sub("", text)
    text = _QUOTES.sub("", text)
    text = _MAGIC_WORD.sub("", text)
    lines = []
    for line in text.splitlines():
        heading = _HEADING.match(line.strip())
        if heading:
            if heading.group(2).strip().lower() in TRAILING_SECTIONS:
                break
            continue
        line = line.strip()
        if not line or line[0] in "|!{}" or line.startswith("----"):  # table rows and leftovers of broken markup
            continue
        line = line.lstrip("*#:; ").strip()
        line = _EMPTY_BRACKETS.sub("", line)
        line = _SPACE_BEFORE_PUNCTUATION.sub(r"\1", _SPACES.sub(" ", line)).strip()
        if line:
            lines.append(line)
    return "\n".join(lines)


def _local(tag: str) -> str:
    """An element's tag without its XML namespace ({http://www.mediawiki.org/xml/export-0.10/}page -> page)."""
    return tag.rsplit("}", 1)[-1]


def _open(path: Path):
    name = path.name.lower()
    if name.endswith(".bz2"):
        return bz2.open(path, "rb")
    if name.endswith(".gz"):
        return gzip.open(path, "rb")
    return open(path, "rb")


def is_wiki_dump(path) -> bool:
    """Whether the file (possibly .bz2/.gz) starts like a MediaWiki XML export."""
    try:
        with _open(Path(path)) as stream:
            head = stream.read(512)
    except (OSError, EOFError):
        return False
    return b"<mediawiki" in head


def iter_wiki_documents(path, min_words: int = MIN_WORDS, stats: MutableMapping | None = None) -> Iterator[str]:
    """Stream the articles of a MediaWiki XML dump as stripped plain-text documents.

    `stats`, if given, receives counts: pages, redirects, other_namespace, too_short, documents, words."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"Wikipedia dump {path} does not exist", "check the path (e.g. a pages-articles*.xml.bz2 file)")
    counts = stats if stats is not None else {}
    for key in ("pages", "redirects", "other_namespace", "too_short", "documents", "words"):
        counts.setdefault(key, 0)
    page: dict[str, str | bool] = {}
    try:
        with _open(path) as stream:
            for event, element in ET.iterparse(stream, events=("start", "end")):
                tag = _local(element.tag)
                if event == "start":
                    if tag == "page":
                        page = {}
                    continue
                if tag == "title":
                    page["title"] = element.text or ""
                elif tag == "ns":
                    page["ns"] = (element.text or "").strip()
                elif tag == "redirect":
                    page["redirect"] = True
                elif tag == "text":
                    page["text"] = element.text or ""
                elif tag == "page":
                    counts["pages"] += 1
                    element.clear()  # keep memory flat on multi-GB dumps
                    document = _page_document(page, min_words, counts)
                    if document:
                        counts["documents"] += 1
                        counts["words"] += len(document.split())
                        yield document
    except ET.ParseError as err:
        raise UserError(f"{path} is not a valid MediaWiki XML dump ({err})", "pass a complete pages-articles XML file (.xml, .xml.bz2)") from None
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read Wikipedia dump {path}: {err}", "check that the file is a complete, valid archive") from None
    if counts["pages"] == 0:
        raise UserError(f"{path} holds no <page> elements", "pass a MediaWiki pages-articles XML dump")


def _page_document(page: dict, min_words: int, counts: MutableMapping) -> str:
    if page.get("ns", "0") != "0":
        counts["other_namespace"] += 1
        return ""
    text = str(page.get("text", ""))
    if page.get("redirect") or text.lstrip()[:9].upper() == "#REDIRECT":
        counts["redirects"] += 1
        return ""
    document = strip_wikitext(text)
    if len(document.split()) < min_words:
        counts["too_short"] += 1
        return ""
    return document


def wiki_test_dump() -> Path:
    """The shortened English Wikipedia dump in gensim's wheel (`pip install --no-deps gensim`), located
    without importing gensim (its import pulls in scipy and compiled extensions)."""
    spec = importlib.util.find_spec("gensim")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / GENSIM_DUMP
        if path.is_file():
            return path
    raise UserError("the shortened Wikipedia dump from gensim's wheel was not found",
                    "install it with `pip install --no-deps gensim`, or pass the path of another dump")


def write_wiki_corpus(dump, out_path, min_words: int = MIN_WORDS) -> dict[str, int]:
    """Write a dump's articles as blank-line-separated documents (readable back with
    data.text.iter_documents). Returns the counts of iter_wiki_documents."""
    stats: dict[str, int] = {}
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)

    def write(out) -> None:
        for document in iter_wiki_documents(dump, min_words, stats):
            out.write((document + "\n\n").encode("utf-8"))

    write_atomically(out_path, write)
    return stats
