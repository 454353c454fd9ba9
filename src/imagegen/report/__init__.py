"""Pictures and pages: every figure imagegen draws (matplotlib, `plots.py` and `figures.py`), the explanation
figures (`draw.py`, over `imagegen.explain`), and the self-contained HTML report of a run (`html.py`)."""

from .html import build_report

__all__ = ["build_report"]
