"""The report's Jinja environment (templates beside this file) and its number filters."""
from __future__ import annotations

import datetime as dt

import jinja2

from .. import __version__

TEMPLATES = jinja2.Environment(loader=jinja2.PackageLoader("webtune.report", "."),
                               autoescape=jinja2.select_autoescape(["html", "j2"]), undefined=jinja2.ChainableUndefined)
TEMPLATES.filters["pct"] = lambda v, digits=0: "—" if v is None else f"{100 * v:.{digits}f}%"
TEMPLATES.filters["num"] = lambda v, digits=3: "—" if v is None else (f"{v:,.{digits}f}" if isinstance(v, float) else f"{v:,}")
TEMPLATES.filters["signed"] = lambda v, digits=3: "—" if v is None else f"{v:+.{digits}f}"


def render(template: str, /, **values) -> str:
    """`template` rendered with `values`, plus the time it was made (`created`) and webtune's version."""
    return TEMPLATES.get_template(template).render(created=dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
                                                   version=__version__, **values)
