"""Output formats for the command line: pure functions from data to text."""

from changeledger.render.envelope import Envelope
from changeledger.render.formats import (
    FORMATS,
    RENDERERS,
    jsonable,
    register,
    render,
    render_to,
)

__all__ = ["FORMATS", "RENDERERS", "Envelope", "jsonable", "register", "render", "render_to"]
