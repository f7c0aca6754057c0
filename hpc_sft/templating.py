"""Render the jinja2 templates shipped in templates/ (StrictUndefined, no autoescape, `q` = shell quote)."""
from __future__ import annotations

import shlex
from pathlib import Path


def templates_dir() -> Path:
    """Inside the wheel: hpc_sft/templates; from a source checkout: the top-level templates/."""
    here = Path(__file__).resolve().parent
    packaged = here / "templates"
    return packaged if packaged.is_dir() else here.parent / "templates"


def render(template: str, **values) -> str:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(templates_dir())), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=True, lstrip_blocks=True)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    return env.get_template(template).render(**values)
