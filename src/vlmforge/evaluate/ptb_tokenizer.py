"""The tokenisation of the COCO caption evaluation in pure Python: what pycocoevalcap's ``PTBTokenizer``
returns for one caption, i.e. Stanford CoreNLP 3.4.1 ``edu.stanford.nlp.process.PTBTokenizer
-preserveLines -lowerCase`` followed by pycocoevalcap's removal of its punctuation tokens
(``. , ? ! : ; - -- ...`` and quotes).

Like the Java lexer (a JFlex scanner), the text is scanned left to right and at each position the longest
match over all rules wins, the earlier rule on a tie; a rule with trailing context (``word/'s``) competes with
the whole match but consumes only its first part. The rules and character classes were established by running
the CoreNLP 3.4.1 jar shipped with pycocoevalcap 1.2 on every Basic Multilingual Plane character and on
realistic and adversarial captions (hyphens, contractions, decimals and thousands, accents, currency,
brackets, quotes, dashes, ellipses, urls, e-mail addresses, emoji); tests/data/coco_caption_reference.json
holds the Java tokens the tests compare against.

Reproduced: lower-casing; ``n't 's 're 've 'll 'd 'm`` split off (``can't`` -> ``ca n't``, ``cannot`` ->
``can not``); ``gonna wanna gotta lemme gimme`` split in two (``gon na``); hyphenated words, numbers with
``. , :`` and fractions kept whole (``3 1/2`` is one token with a no-break space); brackets become
``-lrb- -rrb- -lsb- -rsb- -lcb- -rcb-`` and stay (pycocoevalcap's list has them upper-case); ``€`` -> ``$``,
``£`` -> ``#``, ``¢`` -> ``cents``, ``½`` -> ``1/2``; abbreviations and acronyms keep their period (``mr.``,
``u.s.``, a single letter ``b.``); smileys; emoji outside the Basic Multilingual Plane are dropped, as the
lexer drops characters it cannot tokenise.

Not reproduced: letters and digits follow Python's Unicode tables, newer than those the 2014 lexer was
generated with (some characters of rare scripts differ); words glued together with dots, slashes or urls
and no spaces (``Dr.Jan.café``) are split differently in a few percent of such strings; a line break other
than ``\\n`` (``\\r``, U+2028, U+0085) is a space here but starts a new line in pycocoevalcap, which
misaligns every later caption there; the lexer's rules that look past the end of a caption always see a
newline here (pycocoevalcap's last caption has none after it).
"""

from __future__ import annotations

import re
from collections.abc import Callable

PUNCTUATIONS = frozenset(
    ["''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".", "?", "!", ",", ":", "-", "--", "...", ";"]
)
"""pycocoevalcap/tokenizer/ptbtokenizer.py's list, compared with the lower-cased tokens (so brackets stay)."""

_SYMBOLS = (
    "\u00a1\u00a5-\u00a9\u00ac\u00ae-\u00b4\u00b6-\u00b9\u00bf\u00d7\u00f7\u037e\u0387\u0589\u05be\u05c0\u05c3"
    "\u05c6\u05f3-\u05f4\u0600-\u0603\u0606-\u060c\u0614\u061b\u061e-\u061f\u066a\u066d\u06d4\u0700-\u070d"
    "\u07f6-\u07f8\u0964-\u0965\u0e3f\u0e4f\u1fbd\u2016-\u2017\u201a\u201e-\u2023\u2030-\u2038\u203b"
    "\u203e-\u2042\u2044\u2070\u2074-\u207e\u2080-\u208e\u20a4\u2100-\u2101\u2103-\u2106\u2108-\u2109\u2114"
    "\u2116-\u2118\u211e-\u2123\u2125\u2127\u2129\u212e\u213a-\u213b\u2140-\u2144\u214a-\u214d\u214f"
    "\u2155-\u215e\u2190-\u2bff\u3001-\u3002\u3012\u30fb\uff01-\uff0f\uff1a-\uff20\uff3b-\uff40\uff5b-\uff65"
    "\uffe0-\uffe1\uffe5-\uffe6"
)
"""Non-ASCII characters the 3.4.1 lexer returns as one-character tokens (measured on the jar)."""
_SYMBOL = re.compile(f"[{_SYMBOLS}]")

# Letters (with combining marks and the soft hyphen) and digits, BMP only: the lexer sees UTF-16 code units.
_ASTRAL = "\U00010000-\U0010ffff"
_L = rf"(?:(?![{_SYMBOLS}{_ASTRAL}\u00bc-\u00be\u2153\u2154])[^\W\d_]|[\u00ad\u0300-\u036f])"
_D = rf"(?:(?![{_ASTRAL}])\d)"
_APOS = r"(?:['\u0092\u2019]|&apos;)"
_APOSETC = rf"(?:{_APOS}|[\u0091\u2018\u201b])"
_REDAUX = rf"{_APOS}(?:[msd]|re|ve|ll)"
_WORD = rf"{_L}+"
_NUM = rf"(?:{_D}*(?:[.:,\u00ad\u066b\u066c]{_D}+)+|{_D}+)"
_ACRO = r"[a-z](?:\.[a-z])+"
_HYPHEN = r"[-_\u058a\u2010\u2011]"
_THING_PART = rf"(?:[dol]{_APOSETC}(?:{_L}|{_D}))?(?:{_L}|{_D})+"
_THING = rf"{_THING_PART}(?:{_HYPHEN}{_THING_PART})*"
_HTHING = rf"[a-z0-9][a-z0-9.,\u00ad]*(?:-(?:[a-z0-9\u00ad]+|{_ACRO}\.))+"
_ABBREV1 = (
    r"(?:(?:ed|ph)\.d|jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec|mon|tue|tues|wed|thu|thurs|fri|ala|ariz|ark|calif"
    r"|colo|conn|dak|del|fla|ga|(?-i:I)ll|ind|kans?|ky|la|(?-i:M)ass|md|mich|minn|(?-i:M)iss|mo|mont|neb|nev|okla|(?-i:O)re|pa|penn"
    r"|tenn|tex|va|vt|(?-i:W)ash|wisc?|wyo|inc|cos?|corp|pp?tys?|ltd|plc|bancorp|dept|bhd|assn|univ|intl|sys"
    r"|prop|ph|tel|est|ext|sq|ft|jr|sr|bros|blvd|rd|esq|etc|al|seq|ca)\."
)
_ABBREV2 = (
    rf"(?:{_ACRO}|a\.k\.a|mr|mrs|ms|(?-i:M)iss|drs?|profs?|sens?|reps?|attys?|lt|col|gen|messrs|govs?|adm|rev|maj|sgt|cpl|pvt"
    r"|mt|capt|ste?|ave|pres|lieut|hon|brig|co?mdr|pfc|spc|supts?|det|vs|alex|wm|jos|cie|cf|treas"
    r"|invt|elec|natl|m[ft]g|[a-z])\."
)
_APOWORD = (
    rf"{_APOS}n{_APOS}?|[ldj]{_APOS}|dunkin{_APOS}|somethin{_APOS}|ol{_APOS}|{_APOS}em"
    rf"|(?-i:[A-HJ-XZn]){_APOSETC}{_L}{{2}}{_L}*|{_APOS}[2-9]0s|{_APOS}till?|{_L}+[aeiouy]{_APOSETC}(?-i:[aeiouA-Z]){_L}*"
    rf"|{_APOS}cause|cont'd\.?|nor'easter|c'mon|e'er|s'mores|ev'ry|li'l|nat'l"
)
_URL_END = r"[^ \t\n\f\r\"<>|.!?(){},-]"
_FULLURL = rf"https?://[^ \t\n\f\r\"<>|()]+{_URL_END}"
_LIKELYURL = (
    r"(?:(?:www\.(?:[^ \t\n\f\r\"<>|.!?(){},]+\.)+[a-z]{2,4})|(?:(?:[^ \t\n\f\r\"`'<>|.!?(){},_$-]+\.)+"
    rf"(?:com|net|org|edu)))(?:/[^ \t\n\f\r\"<>|()]+{_URL_END})?"
)
_EMAIL = r"[a-z0-9][^ \t\n\f\r\"<>|()\u00a0]*@(?:[^ \t\n\f\r\"<>|().\u00a0]+\.)*[^ \t\n\f\r\"<>|().\u00a0]+"
_PHONE = r"(?:\(\d{3}\)[ \u00a0]?|\d{3}[- \u00a0.])\d{3}[- \u00a0.]\d{4}"
_QUOTE_CHARS = (
    "`\u2018\u2019\u201a\u201b\u201c\u201d\u0091\u0092\u0093\u0094\u201e\u201f\u2039\u203a\u00ab\u00bb"
)
_QUOTES = rf"{_APOS}|''|[{_QUOTE_CHARS}]{{1,2}}"

Action = Callable[[str], str | None]


def _keep(text: str) -> str:
    return text


def _drop(_text: str) -> None:
    return None


def _const(value: str) -> Action:
    return lambda _text: value


def _without_soft_hyphens(text: str) -> str:
    return text.replace("\u00ad", "")


def _nbsp(text: str) -> str:
    return text.replace(" ", "\u00a0")


def _phone(text: str) -> str:
    return _nbsp(text).replace("(", "-LRB-").replace(")", "-RRB-")


def _latex_quotes(text: str) -> str:
    """The lexer's ``latexQuotes`` for a closing quote (the quote tokens are punctuation either way)."""
    text = re.sub("&apos;", "'", text).replace('"', "''").replace("&quot;", "''")
    for chars, out in (("\u0091\u2018\u201b\u2039", "`"), ("\u0092\u2019\u203a", "'")):
        text = re.sub(f"[{chars}]", out, text)
    return re.sub("[\u0094\u201d\u00bb]", "''", re.sub("[\u0093\u201c\u00ab]", "``", text))


def _smiley(text: str) -> str:
    return text.replace("(", "-LRB-").replace(")", "-RRB-")


def _currency(text: str) -> str:
    text = text.replace("\u00a2", "cents").replace("\u00a3", "#")
    return re.sub("[\u0080\u00a4\u20a0\u20ac]", "$", text)


_FRACTIONS = {"\u00bc": "1/4", "\u00bd": "1/2", "\u00be": "3/4", "\u2153": "1/3", "\u2154": "2/3"}
_BRACKETS = {"(": "-LRB-", ")": "-RRB-", "[": "-LSB-", "]": "-RSB-", "{": "-LCB-", "}": "-RCB-"}

# (pattern, action): a pattern's group "t" is what the rule consumes; the rest is trailing context.
_RULE_TABLE: list[tuple[str, Action]] = [
    (r"(?P<t>can)not", _keep),
    (r"<\/?[a-z!][^>]*>", _keep),
    (r"&(?:md|mdash|ndash);|[\u0096\u0097\u2013\u2014\u2015]", _const("--")),
    (r"&amp;", _const("&")),
    (rf"(?P<t>{_WORD}){_REDAUX}", _without_soft_hyphens),
    (rf"(?P<t>[a-z\u00ad]*[a-mo-z]\u00ad*)n{_APOSETC}t", _without_soft_hyphens),
    (r"(?P<t>(?:gon|wan)(?=na)|got(?=ta)|(?:lem|gim)(?=me))[a-z]{2}", _keep),
    (_WORD, _without_soft_hyphens),
    (_APOWORD, _keep),
    (rf"(?P<t>y{_APOS}){_L}", _keep),
    (rf"(?P<t>{_APOS}t)(?:is|was)", _keep),
    (_FULLURL, _keep),
    (_LIKELYURL, _keep),
    (_EMAIL, _keep),
    (r"#[a-z]+|@[a-z_][a-z0-9_]*", _keep),
    (rf"(?P<t>{_REDAUX})[^a-z]", _latex_quotes),
    (rf"n{_APOSETC}t", _latex_quotes),
    (r"\d{1,2}[-/]\d{1,2}[-/]\d{2,4}", _keep),
    (rf"[-+]?{_NUM}", _without_soft_hyphens),
    (r"[\u207a\u207b\u208a\u208b]?(?:[\u2070\u00b9\u00b2\u00b3\u2074-\u2079]+|[\u2080-\u2089]+)", _keep),
    (r"(?:\d{1,4}[- \u00a0])?\d{1,4}(?:\\?/|\u2044)\d{1,4}", _nbsp),
    (r"[\u00bc\u00bd\u00be\u2153\u2154]", lambda text: _FRACTIONS[text]),
    (
        r"-(?:rrb|lrb|rcb|lcb|rsb|lsb)-|c#|f#|c\+\+|c\.d\.s|pro-|anti-|s(?:&|&amp;)p-500|s(?:&|&amp;)ls|cap'n|c'est",
        _keep,
    ),
    (r"[a-z0-9]+(?:-[a-z]+){0,2}(?:\\?/[a-z0-9]+(?:-[a-z]+){0,2}){1,2}", _keep),
    (r"(?-i:[A-Z])*\$|#", _keep),
    (r"[\u00a2\u00a3\u00a4\u00a5\u0080\u20a0\u20ac\u060b\u0e3f\u20a4\uffe0\uffe1\uffe5\uffe6]", _currency),
    (_ABBREV1, _keep),
    (r"(?P<t>nos?\.)[ \t\u00a0]*\d", _keep),
    (rf"{_WORD}(?:\.{_WORD})+", _without_soft_hyphens),
    (rf"(?P<t>{_WORD}(?:\.{_WORD})+\.)[,;:]", _without_soft_hyphens),
    (r"[<>]?[:;=][-o*']?(?-i:[()DPdpO\\{@|\[\]])", _smiley),
    (_ABBREV2, _keep),
    (rf"(?P<t>{_ACRO})[ \t\u00a0\u2000-\u200a\u3000\r\n\u2028\u2029\x0b\x0c\x85]", _keep),
    (rf"(?P<t>'{_D}{_D})\s", _keep),
    (rf"(?P<t>{_WORD}\.)[,;:]", _without_soft_hyphens),
    (_PHONE, _phone),
    (r"\"|&quot;", _latex_quotes),
    (r"[+%&\u2030\u2031~^|\\=/]", _keep),
    (r"[<>]|&lt;|&gt;", _keep),
    (r"[()\[\]{}]", lambda text: _BRACKETS[text]),
    (r"-+", lambda text: "--" if 3 <= len(text) <= 4 else text),
    (r"\.{3,5}|(?:\.[ \u00a0]){2,4}\.|[\u0085\u2026]", _const("...")),
    (r"@+|#+|_+|\*+", _keep),
    (r"[,;:]|[?!]+|[.\u00a1\u00bf\u037e\u0589\u061f\u06d4\u0700-\u0702\u07fa]", _keep),
    (rf"(?P<t>{_HTHING}\.)[,;:]", _without_soft_hyphens),
    (_HTHING, _without_soft_hyphens),
    (rf"(?P<t>{_THING}\.)[,;:]", _keep),
    (_THING, _keep),
    (r"(?-i:[A-Z])+(?:(?:[+&]|&amp;)(?-i:[A-Z])+)+", lambda text: text.replace("&amp;", "&")),
    (r"(?P<t>')[a-z][^ \t\n\r\u00a0]", _const("`")),
    (_REDAUX, _latex_quotes),
    (_QUOTES, _latex_quotes),
    (f"[{_SYMBOLS}]", _keep),
    (r"[\s\x00\u200b\u200e\u200f\ufeff]+", _drop),
]
_RULES = [(re.compile(pattern, re.IGNORECASE), action) for pattern, action in _RULE_TABLE]


def _scan(text: str) -> list[str]:
    """PTB tokens of ``text`` before lower-casing: at each position the longest match, the first on a tie."""
    tokens: list[str] = []
    position = 0
    while position < len(text):
        best_length, consumed, action = 0, 1, _drop
        for pattern, rule_action in _RULES:
            match = pattern.match(text, position)
            if match and match.end() - position > best_length:
                best_length = match.end() - position
                end = match.end("t") if "t" in pattern.groupindex else match.end()
                consumed, action = end - position, rule_action
        token = action(text[position : position + consumed]) if best_length else None
        if token is not None:
            tokens.append(token)
        position += consumed
    return tokens


def ptb_tokenize(text: str) -> list[str]:
    """The tokens pycocoevalcap's ``PTBTokenizer`` gives one caption (lower-cased, punctuation removed)."""
    lowered = (
        token.lower() for token in _scan(text.replace("\n", " ") + "\n")
    )  # pycocoevalcap ends each line with a newline
    return [token for token in lowered if token not in PUNCTUATIONS]
