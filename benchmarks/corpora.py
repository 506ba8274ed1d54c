"""English prose that ships inside Debian documentation packages, as pre-training text for the
effectiveness study (no hub, no downloads beyond the Debian archive).

    python benchmarks/corpora.py --out runs/corpora            # installs what is missing (root), writes one .txt each

Each source becomes one text file, one document per page, documents separated by blank lines (the
layout `fast-electra prepare` reads). Code, tables and navigation are dropped: a paragraph is kept
when it reads as prose (mostly alphabetic words, at least PROSE_MIN_WORDS of them)."""
from __future__ import annotations

import argparse
import gzip
import html.parser
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

PROSE_MIN_WORDS = 6
PROSE_MIN_ALPHA = 0.7  # share of a paragraph's words that are plain words

# name -> (Debian package, directory, file pattern, reader)
SOURCES = {
    "python-docs": ("python3.11-doc", "/usr/share/doc/python3.11/html", "*.html", "html"),
    "linux-docs": ("linux-doc-6.1", "/usr/share/doc/linux-doc-6.1/Documentation", "*.rst.gz", "rst"),
    "postgresql-docs": ("postgresql-doc-15", "/usr/share/doc/postgresql-doc-15/html", "*.html", "html"),
}
WORD = re.compile(r"^[A-Za-z][A-Za-z'’-]*[.,;:!?)]*$")


def is_prose(paragraph: str) -> bool:
    words = paragraph.split()
    return len(words) >= PROSE_MIN_WORDS and sum(bool(WORD.match(w.strip("(\"'"))) for w in words) >= PROSE_MIN_ALPHA * len(words)


class _HTMLText(html.parser.HTMLParser):
    """Paragraph text of an HTML page, without code, navigation, scripts and tables."""
    SKIP = {"script", "style", "pre", "nav", "head", "table", "code", "footer"}
    BREAK = {"p", "li", "dd", "dt", "h1", "h2", "h3", "h4", "div", "br", "blockquote", "section"}
    PARAGRAPH = "\x00"

    def __init__(self) -> None:
        super().__init__()
        self.skipping, self.parts = 0, []

    def handle_starttag(self, tag, attrs):
        if tag in self.SKIP:
            self.skipping += 1
        if tag in self.BREAK:
            self.parts.append(self.PARAGRAPH)

    def handle_endtag(self, tag):
        if tag in self.SKIP:
            self.skipping = max(0, self.skipping - 1)
        if tag in self.BREAK:
            self.parts.append(self.PARAGRAPH)

    def handle_data(self, data):
        if not self.skipping:
            self.parts.append(data)  # newlines inside a paragraph are only whitespace


def html_paragraphs(path: Path) -> list[str]:
    parser = _HTMLText()
    parser.feed(path.read_text(errors="replace"))
    return [" ".join(p.split()) for p in "".join(parser.parts).split(parser.PARAGRAPH)]


def rst_paragraphs(path: Path) -> list[str]:
    """reStructuredText paragraphs, without literal blocks (indented after `::`), directives and titles' underlines."""
    lines = gzip.open(path, "rt", errors="replace").read().splitlines()
    paragraphs, current, literal = [], [], False
    for line in lines + [""]:
        if not line.strip():
            if current:
                text = " ".join(current)
                paragraphs.append(text)
                literal = text.endswith("::")
            current = []
            continue
        if literal and line[:1].isspace():
            continue  # an indented literal block after "::"
        literal = False
        stripped = line.strip()
        if stripped.startswith(("..", ":")) or set(stripped) <= set("=-~^*#+`'\""):
            continue
        current.append(re.sub(r"`+|\*\*|:\w+:", "", stripped))
    return paragraphs


def write_source(name: str, out_dir: Path, install: bool = True) -> dict:
    package, directory, pattern, reader = SOURCES[name]
    root = Path(directory)
    if not root.is_dir():
        if not install or shutil.which("apt-get") is None:
            raise SystemExit(f"error: {root} is missing; install it with: apt-get install {package}")
        subprocess.run(["apt-get", "install", "-y", "-q", package], check=True, stdout=subprocess.DEVNULL)
    read = html_paragraphs if reader == "html" else rst_paragraphs
    out = out_dir / f"{name}.txt"
    out_dir.mkdir(parents=True, exist_ok=True)
    documents = words = 0
    partial = out.with_suffix(".txt.partial")
    with partial.open("w") as f:
        for path in sorted(root.rglob(pattern)):
            kept = [p for p in read(path) if is_prose(p)]
            if sum(len(p.split()) for p in kept) < 50:
                continue  # index pages, stubs
            f.write("\n".join(kept) + "\n\n")
            documents += 1
            words += sum(len(p.split()) for p in kept)
    partial.replace(out)
    return {"source": f"Debian {package} ({directory})", "file": str(out), "documents": documents, "words": words}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default="runs/corpora")
    parser.add_argument("--sources", nargs="+", default=list(SOURCES), choices=list(SOURCES))
    parser.add_argument("--no-install", dest="install", action="store_false")
    args = parser.parse_args(argv)
    for name in args.sources:
        print(json.dumps(write_source(name, Path(args.out), args.install)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
