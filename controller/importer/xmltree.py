"""Safe XML parsing for the importers, and the ledger of what a mapping took from a document.

`parse()` reads one or more XML documents (`virsh dumpxml` output; several concatenated, as a
shell loop over `virsh dumpxml` makes them) with expat directly and refuses any DOCTYPE:
libvirt's XML never has one, and without one there is no entity to expand without bound
(billion laughs) or to read from a file or URL (XXE). ElementTree's own parser offers no hook
for that refusal (its C implementation hides expat), and defusedxml would be a dependency for
these few lines.

`Ledger` is how a mapping reads a document: it takes attributes, text and elements through it,
and `leftovers()` then describes everything it did not take as comment lines, so nothing is
dropped silently. The `<address>` and `<alias>` of a device (where libvirt placed it, what it
called it) are counted rather than listed: every device has them, and domctl places and names
devices itself.
"""

from __future__ import annotations

import collections
import xml.etree.ElementTree as ET
from xml.parsers import expat

Element = ET.Element
PLACEMENT = ("address", "alias")  # of a device: counted in `Ledger.placement`, not listed
MAX_DEPTH = 100  # elements nested deeper are refused (libvirt's go 6 deep; the ledger recurses)
MAX_SNIPPET = 1000  # characters of one element shown in a comment; the rest is counted
_RESUMABLE = {expat.errors.codes[expat.errors.XML_ERROR_JUNK_AFTER_DOC_ELEMENT],
              expat.errors.codes[expat.errors.XML_ERROR_MISPLACED_XML_PI]}


class XmlError(ValueError):
    """Input that is not well-formed XML, or that this parser refuses."""


def parse(data: bytes) -> list[Element]:
    """The root element of each XML document in `data`, in order (at least one)."""
    roots: list[Element] = []
    offset = 0
    while data[offset:].strip():
        root, offset = _parse_one(data, offset)
        roots.append(root)
    if not roots:
        raise XmlError("no XML document in the input")
    return roots


class _Refused(Exception):
    """Raised from an expat handler to stop the parse (expat passes it through)."""


def _refuse_doctype(*_: object) -> None:
    raise _Refused("a DOCTYPE is refused: libvirt's XML has none, and its entities could expand "
                   "without bound or read local files")


def _parse_one(data: bytes, offset: int) -> tuple[Element, int]:
    """The document starting at byte `offset`, and the offset where the next one starts (or the
    end of `data`)."""
    builder = ET.TreeBuilder()
    depth = [0, 0]  # open elements, elements closed at depth 0 (a complete root)

    def start(tag: str, attrs: dict[str, str]) -> None:
        depth[0] += 1
        if depth[0] > MAX_DEPTH:
            raise _Refused(f"elements nested more than {MAX_DEPTH} deep are refused")
        builder.start(tag, attrs)

    def end(tag: str) -> None:
        depth[0] -= 1
        depth[1] += depth[0] == 0
        builder.end(tag)

    parser = expat.ParserCreate()
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.StartDoctypeDeclHandler = _refuse_doctype
    parser.EntityDeclHandler = _refuse_doctype
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data[offset:], True)
        end_offset = len(data)
    except _Refused as err:
        where = _where(data, offset, parser.CurrentLineNumber, parser.CurrentColumnNumber)
        raise XmlError(f"{where}: {err}") from None
    except expat.ExpatError as err:
        if err.code not in _RESUMABLE or depth[1] != 1:
            message = expat.errors.messages[err.code]
            raise XmlError(f"{_where(data, offset, err.lineno, err.offset)}: {message}") from None
        end_offset = offset + parser.ErrorByteIndex  # another document follows this one
    root: Element = builder.close()
    return root, end_offset


def _where(data: bytes, offset: int, line: int, column: int) -> str:
    """`line L, column C` in the whole input, for a position in the document at `offset`."""
    before = data[:offset]
    if line == 1:
        column += offset - (before.rfind(b"\n") + 1)
    line += before.count(b"\n")
    return f"line {line}, column {column + 1}"


class Ledger:
    """What a mapping took from the document under `root`, and the rest as comment lines."""

    def __init__(self, root: Element, reasons: dict[str, str] | None = None) -> None:
        self._reasons = dict(reasons or {})  # tag → why; said with the first one not taken
        self._taken: dict[Element, set[str]] = {}  # element → its attributes taken
        self._text: set[Element] = set()  # elements whose text was taken
        self._done: set[Element] = set()  # elements described (or counted) already
        self._parent = {child: parent for parent in root.iter() for child in parent}
        self.placement: collections.Counter[str] = collections.Counter()

    def take(self, elem: Element) -> None:
        """Mark `elem` as mapped (what of it is not taken later is still reported)."""
        self._taken.setdefault(elem, set())

    def _attributes(self, elem: Element) -> set[str]:
        return self._taken.setdefault(elem, set())

    def attr(self, elem: Element, name: str) -> str | None:
        """Attribute `name` of `elem`, taken (and `elem` with it)."""
        self._attributes(elem).add(name)
        return elem.get(name)

    def accept(self, elem: Element, name: str, *values: str) -> bool:
        """Take attribute `name` when it is absent or one of `values` (what domctl does
        anyway); leave it to be reported otherwise."""
        value = elem.get(name)
        if value is None or value in values:
            self._attributes(elem).add(name)
            return True
        return False

    def text(self, elem: Element) -> str:
        """The text of `elem`, stripped, taken (and `elem` with it)."""
        self.take(elem)
        self._text.add(elem)
        return (elem.text or "").strip()

    def leftovers(self, elem: Element) -> list[str]:
        """Comment lines for what of `elem` and below was neither taken nor described yet;
        all of it counts as described afterwards."""
        if elem in self._done:
            return []
        self._done.add(elem)
        if self._is_placement(elem):
            self.placement[elem.tag] += 1
            return []
        if elem not in self._taken:
            parent = self._parent.get(elem)
            inside = f" in <{parent.tag}>" if parent is not None and parent.tag not in (
                "domain", "devices") else ""
            reason = self._reasons.pop(elem.tag, None)
            why = f" ({reason})" if reason else ""
            return [f"not imported: {_cut(self._snippet(elem))}{inside}{why}"]
        lines = []
        rest = {k: v for k, v in elem.attrib.items()
                if k not in self._taken[elem] and not k.startswith("xmlns")}
        if rest:
            lines.append(f"not imported: {_attributes(rest).strip()} of <{elem.tag}>")
        texts = [] if elem in self._text else [elem.text]
        texts += [child.tail for child in elem]
        if any(_collapse(t) for t in texts):
            said = " ".join(_collapse(t) for t in texts if _collapse(t))
            lines.append(f"not imported: the text '{_cut(said)}' of <{elem.tag}>")
        for child in elem:
            lines += self.leftovers(child)
        return lines

    def _is_placement(self, elem: Element) -> bool:
        device = self._parent.get(elem)
        devices = self._parent.get(device) if device is not None else None
        return elem.tag in PLACEMENT and devices is not None and devices.tag == "devices"

    def _snippet(self, elem: Element) -> str:
        """`elem` as compact XML (whitespace collapsed, placement counted and left out)."""
        self._done.add(elem)
        inner = _escape(_collapse(elem.text))
        for child in elem:
            if self._is_placement(child):
                self._done.add(child)
                self.placement[child.tag] += 1
            else:
                inner += self._snippet(child)
            inner += _escape(_collapse(child.tail))
        head = f"<{elem.tag}{_attributes(elem.attrib)}"
        return f"{head}>{inner}</{elem.tag}>" if inner else f"{head}/>"


def _collapse(text: str | None) -> str:
    return " ".join((text or "").split())


def _escape(text: str, quote: str = "") -> str:
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return text.replace(quote, "&apos;") if quote else text


def _attributes(attrs: dict[str, str]) -> str:
    """` a='v' b='w'`, as virsh writes them."""
    return "".join(f" {name}='{_escape(value, chr(39))}'" for name, value in attrs.items())


def _cut(text: str) -> str:
    if len(text) <= MAX_SNIPPET:
        return text
    return f"{text[:MAX_SNIPPET]}… ({len(text) - MAX_SNIPPET} more characters)"
