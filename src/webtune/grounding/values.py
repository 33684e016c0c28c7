"""Values in a text: numbers, quantities with units, prices, percentages, durations, dates, times
and versions, each normalised to a key so that "2-year" = "2 year", "1,000" = "1000",
"ten" = "10" and "$49.99" = a field holding 49.99.

A value is supported when the source holds the same number with the same unit (a price also by
the bare number, as price fields hold it: 49.99); a number without a unit by the same number
anywhere in the source. Numbers inside identifiers
(B0TGVZ95FX, sqlite3_open) are not values, and neither are list markers ("1. Open ...").
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation

_UNITS = {
    "%": ["%", "percent", "per cent", "pct"],
    "$": ["$", "usd", "dollar", "dollars", "us$"], "€": ["€", "eur", "euro", "euros"], "£": ["£", "gbp", "pound sterling"],
    "second": ["s", "sec", "secs", "second", "seconds"], "minute": ["min", "mins", "minute", "minutes"],
    "hour": ["h", "hr", "hrs", "hour", "hours"], "day": ["day", "days"], "week": ["wk", "week", "weeks"],
    "month": ["mo", "month", "months"], "year": ["yr", "yrs", "year", "years"],
    "ms": ["ms", "millisecond", "milliseconds"],
    "mm": ["mm", "millimeter", "millimeters", "millimetre", "millimetres"],
    "cm": ["cm", "centimeter", "centimeters", "centimetre", "centimetres"],
    "m": ["m", "meter", "meters", "metre", "metres"], "km": ["km", "kilometer", "kilometers", "kilometre", "kilometres"],
    "inch": ["inch", "inches", "in.", "\""], "foot": ["ft", "foot", "feet"], "mile": ["mi", "mile", "miles"],
    "g": ["g", "gram", "grams"], "kg": ["kg", "kilo", "kilos", "kilogram", "kilograms"],
    "lb": ["lb", "lbs", "pound", "pounds"], "oz": ["oz", "ounce", "ounces", "fl oz"],
    "ml": ["ml", "milliliter", "milliliters", "millilitre", "millilitres"],
    "l": ["l", "liter", "liters", "litre", "litres"], "gallon": ["gal", "gallon", "gallons"],
    "cup": ["cup", "cups"], "quart": ["qt", "quart", "quarts"],
    "byte": ["b", "byte", "bytes"], "kb": ["kb", "kib", "kilobyte", "kilobytes"], "mb": ["mb", "mib", "megabyte", "megabytes"],
    "gb": ["gb", "gib", "gigabyte", "gigabytes"], "tb": ["tb", "tib", "terabyte", "terabytes"],
    "bit": ["bit", "bits"], "mbps": ["mbps", "mb/s"], "gbps": ["gbps", "gb/s"],
    "w": ["w", "watt", "watts"], "kw": ["kw", "kilowatt", "kilowatts"], "v": ["v", "volt", "volts"],
    "mah": ["mah"], "wh": ["wh"], "a": ["amp", "amps", "ampere", "amperes"],
    "hz": ["hz", "hertz"], "khz": ["khz"], "mhz": ["mhz"], "ghz": ["ghz"], "db": ["db", "decibel", "decibels"],
    "lumen": ["lm", "lumen", "lumens"], "rpm": ["rpm"], "psi": ["psi"], "px": ["px", "pixel", "pixels"],
    "°c": ["°c", "ºc", "degrees celsius", "celsius"], "°f": ["°f", "ºf", "degrees fahrenheit", "fahrenheit"],
    "°": ["°", "degree", "degrees"], "x": ["x"],
    "piece": ["pc", "pcs", "piece", "pieces"], "pack": ["pack", "packs", "pk"], "count": ["count", "ct"],
    "e3": ["thousand", "k"], "e6": ["million", "m."], "e9": ["billion", "bn"],
}
UNIT = {alias: canon for canon, aliases in _UNITS.items() for alias in aliases}
_CURRENCY_SIGNS = "$€£¥"
_PRICE_UNITS = {"$", "€", "£", "¥"}

_NUMBER_WORDS = {
    "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16,
    "seventeen": 17, "eighteen": 18, "nineteen": 19, "twenty": 20, "thirty": 30, "forty": 40,
    "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100, "dozen": 12,
}
_MONTHS = {m: i + 1 for i, m in enumerate(
    ["january", "february", "march", "april", "may", "june", "july", "august", "september", "october",
     "november", "december"])}
_MONTHS.update({m[:3]: i for m, i in list(_MONTHS.items())})
_MONTHS["sept"] = 9

_unit_alt = "|".join(re.escape(u) for u in sorted((u for u in UNIT if u not in _CURRENCY_SIGNS), key=len, reverse=True))
_num = r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)*"
_word_num = (r"(?:" + "|".join(sorted(_NUMBER_WORDS, key=len, reverse=True)) + r")(?:[- ](?:one|two|three|four|five|six|"
             r"seven|eight|nine))?")
_month = r"(?:" + "|".join(sorted(_MONTHS, key=len, reverse=True)) + r")\.?"
_VALUE = re.compile(
    rf"(?P<iso>(?<![\w.])\d{{4}}-\d{{2}}-\d{{2}}(?![\w]))"
    rf"|(?P<mdate>\b{_month}\s+(?P<md>\d{{1,2}})(?:st|nd|rd|th)?(?:,?\s+(?P<my>\d{{4}}))?(?![\w]))"
    rf"|(?P<dmdate>(?<![\w.])(?P<dd>\d{{1,2}})(?:st|nd|rd|th)?\s+(?P<dm>{_month})(?:,?\s+(?P<dy>\d{{4}}))?(?![\w]))"
    rf"|(?P<clock>(?<![\w.:])\d{{1,2}}:\d{{2}}(?::\d{{2}})?(?![\w:]))"
    rf"|(?P<cur>[{_CURRENCY_SIGNS}])\s?(?P<cnum>{_num})(?:\s?(?P<cmult>thousand|million|billion|k|bn)\b)?"
    rf"|(?P<ver>(?<![\w.])v(?P<vnum>\d+(?:\.\d+)*)(?![\w]))"
    rf"|(?P<num>(?<![\w.,])(?:{_num})(?:st|nd|rd|th)?)(?:(?:\s?-\s?|\s)?(?P<unit>{_unit_alt})(?![\w]))?(?![\w])"
    rf"|(?P<wnum>\b{_word_num}\b)(?:(?:\s?-\s?|\s)(?P<wunit>{_unit_alt})(?![\w]))?"
    rf"|(?P<one>\bone)(?:\s?-\s?|\s)(?P<ounit>{_unit_alt})(?![\w])",
    re.IGNORECASE)
_LIST_MARKER = re.compile(r"^[ \t>*-]*$")
_DIGITS = re.compile(r"\d+(?:\.\d+)*")


@dataclass(frozen=True, slots=True)
class Value:
    start: int
    end: int
    text: str
    number: str        # normalised number (or the date / time / version key)
    unit: str | None   # canonical unit, "$" for prices, "date", "time", "version"


def normal_number(text: str) -> str:
    """'1,000' -> '1000', '49.90' -> '49.9', '15.0' -> '15'; a version (two dots) stays as written."""
    text = text.replace(",", "")
    if text.count(".") > 1:
        return text
    try:
        d = Decimal(text).normalize()
    except InvalidOperation:
        return text
    return format(d, "f")


def _word_number(text: str) -> str:
    parts = re.split(r"[- ]", text.lower())
    total = 0
    for p in parts:
        total = total * 100 if p == "hundred" and total else total + _NUMBER_WORDS.get(p, _ONES.get(p, 0))
    return str(total)


_ONES = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9}


def _scaled(number: str, mult: str | None) -> str:
    if not mult:
        return number
    scale = {"e3": 3, "e6": 6, "e9": 9}[UNIT[mult.lower()]]
    try:
        return normal_number(str(Decimal(number) * (Decimal(10) ** scale)))
    except InvalidOperation:
        return number


def values(text: str) -> list[Value]:
    """Every value in `text`, in order."""
    out = []
    for m in _VALUE.finditer(text):
        g = m.groupdict()
        if g["iso"]:
            out.append(Value(m.start(), m.end(), m.group(), g["iso"], "date"))
        elif g["mdate"] or g["dmdate"]:
            month = _MONTHS[(g["dm"] or m.group().split()[0]).lower().rstrip(".")]
            day, year = int(g["md"] or g["dd"]), g["my"] or g["dy"]
            key = f"{year or '----'}-{month:02d}-{day:02d}"
            out.append(Value(m.start(), m.end(), m.group(), key, "date"))
        elif g["clock"]:
            out.append(Value(m.start(), m.end(), m.group(), g["clock"].lstrip("0") or "0", "time"))
        elif g["cur"]:
            number = _scaled(normal_number(g["cnum"]), g["cmult"])
            out.append(Value(m.start(), m.end(), m.group(), number, UNIT[g["cur"]] if g["cur"] in UNIT else g["cur"]))
        elif g["ver"]:
            out.append(Value(m.start(), m.end(), m.group(), g["vnum"], "version"))
        elif g["num"]:
            if _is_list_marker(text, m):
                continue
            raw = re.sub(r"(st|nd|rd|th)$", "", g["num"], flags=re.IGNORECASE)
            unit = UNIT.get(g["unit"].lower()) if g["unit"] else None
            number = normal_number(raw)
            if unit in ("e3", "e6", "e9"):
                number, unit = _scaled(number, g["unit"]), None
            if raw.count(".") > 1:
                unit = unit or "version"
            out.append(Value(m.start(), m.end(), m.group(), number, unit))
        elif g["wnum"]:
            unit = UNIT.get(g["wunit"].lower()) if g["wunit"] else None
            out.append(Value(m.start(), m.end(), m.group(), _word_number(g["wnum"]), unit))
        elif g["one"]:
            out.append(Value(m.start(), m.end(), m.group(), "1", UNIT.get(g["ounit"].lower())))
    return out


def _is_list_marker(text: str, m) -> bool:
    """'1. Open the file' or '2) Run': a numbered list's marker, not a stated value."""
    after = text[m.end():m.end() + 2]
    if not (after[:1] in (".", ")") and after[1:2] in (" ", "\t")):
        return False
    line_start = text.rfind("\n", 0, m.start()) + 1
    return bool(_LIST_MARKER.match(text[line_start:m.start()]))


class SourceValues:
    """What a source states, for `supports`: (number, unit) pairs, the numbers it states bare, and
    every digit run anywhere (a number inside a field's text or code is still the source's number)."""

    def __init__(self, text: str):
        found = values(text)
        digits = {normal_number(d) for d in _DIGITS.findall(text)}
        self.pairs = {(v.number, v.unit) for v in found}
        self.numbers = {v.number for v in found} | digits
        self.bare = {v.number for v in found if v.unit is None}

    def supports(self, v: Value) -> bool:
        if v.unit in ("date", "time"):
            if (v.number, v.unit) in self.pairs:
                return True
            # "March 3" against "2024-03-03"
            return v.number.startswith("----") and any(u == "date" and n.endswith(v.number[4:]) for n, u in self.pairs)
        if v.unit is None or v.unit == "version":
            return v.number in self.numbers
        if (v.number, v.unit) in self.pairs:
            return True
        # a price is usually a bare number in its field (final_price: 49.99); any other unit must match:
        # "Pieces: 4" does not say "4 days", nor "Warranty: 3" "3 pounds"
        return v.unit in _PRICE_UNITS and v.number in self.bare
