"""report.html: one self-contained page with a sweep's frontier plots and tables.

Images are embedded as base64 ``data:`` URIs and the style sheet is inline: the file opens offline, from
a laptop, a bucket browser or an e-mail attachment, and requests nothing (not even a favicon). No
JavaScript. Tables longer than MAX_ROWS show their first rows and say where the rest is.
"""

from __future__ import annotations

import base64
import html

import pandas as pd

MAX_ROWS = 300  # per table; the CSV beside the report holds every row
TEXT_CHARS = 300  # of an example's text in a table

# Which tables appear, in what order, with what caption (the CSV of the same name holds all rows).
SECTIONS = [
    ("no_signal.csv", "No signal",
     "Dataset / weak supervisor / student whose results cannot be told from chance, and why."),
    ("regimes.csv", "Regimes",
     "Per budget: the best spending fraction and its regime, claimed only when an endpoint is separated "
     "from the best by more than the tolerance and by a paired interval that excludes 0; "
     "otherwise indeterminate, with the reason."),
    ("budget_table.csv", "Budget table",
     "Best accuracy (or AUROC, --metric) reachable with label cost at most the budget, per method "
     "(rows: budgets); majority_rate and auroc_chance are the baselines to beat."),
    ("frontier.csv", "Pareto frontier",
     "Points no other point beats on both cost and accuracy; per method and across methods (*all*)."),
    ("pgr.csv", "Performance gap recovered",
     "(accuracy - weak accuracy) / (ceiling - weak accuracy) with an interval; NaN with a reason when "
     "undefined or when ceiling - weak is not significantly above 0."),
    ("curves.csv", "Curves",
     "Seed-mean accuracy and AUROC per budget and spending fraction, with std, number of seeds and "
     "interval (ci_method); majority_rate (the test pool's majority-class rate) and auroc_chance (0.5) "
     "are the baselines."),
]
FIGURES = [
    ("curves.png", "Accuracy vs spending fraction, one line per budget"),
    ("frontier.png", "Pareto frontier per method"),
    ("budget_table.png", "Best accuracy reachable per budget"),
]

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
dl.summary { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1.5em; }
dl.summary dt { font-weight: 600; } dl.summary dd { margin: 0; }
figure { margin: 1em 0; } figure img { max-width: 100%; border: 1px solid #eee; }
figcaption, p.note { color: #555; font-size: 0.9em; }
table.data { border-collapse: collapse; font-size: 0.8em; font-variant-numeric: tabular-nums; }
table.data th, table.data td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
table.data th { background: #f4f4f4; position: sticky; top: 0; }
div.scroll { max-height: 30em; overflow: auto; }
div.warning { background: #fdecea; border: 2px solid #c62828; color: #8e0000; padding: 0.6em 1em;
  margin: 0.5em 0; font-weight: 600; }
"""


def _image(name: str, data: bytes, caption: str) -> str:
    uri = "data:image/png;base64," + base64.b64encode(data).decode("ascii")
    return (f'<figure><img src="{uri}" alt="{html.escape(caption)}">'
            f"<figcaption>{html.escape(caption)} ({html.escape(name)})</figcaption></figure>")


def _table(name: str, frame: pd.DataFrame) -> str:
    shown = frame.head(MAX_ROWS)
    body = shown.to_html(index=False, na_rep="NaN", float_format=lambda x: f"{x:.4g}", classes="data",
                         border=0, escape=True)
    note = ""
    if len(frame) > MAX_ROWS:
        note = (f'<p class="note">First {MAX_ROWS} of {len(frame)} rows; '
                f"all of them are in {html.escape(name)}.</p>")
    if frame.empty:
        return f'<p class="note">No rows ({html.escape(name)} is empty).</p>'
    return f'<div class="scroll">{body}</div>{note}'


def _consistency(tables: dict[str, pd.DataFrame]) -> list[str]:
    """The consistency section (`w2sweep.consistency`): the rule, one banner per flagged cell, its
    tables; example texts clipped to TEXT_CHARS (disagreements.csv holds them whole)."""
    from w2sweep.consistency import RULE

    cells = tables.get("consistency_cells.csv", pd.DataFrame(columns=["flagged"]))
    parts = ['<h2 id="consistency">Consistency</h2>', f'<p class="note">{html.escape(RULE)}</p>']
    parts += [f'<div class="warning">Flagged: {html.escape(f"{r.dataset} / {r.student} / {r.cell_id}")}: '
              f"consensus agreement {r.consensus_agreement:.3f} &lt; {r.threshold:.3f}</div>"
              for r in cells[cells["flagged"].astype(bool)].itertuples(index=False)]
    for name, frame in tables.items():
        if "text" in frame:
            frame = frame.assign(text=frame["text"].astype(str).str.slice(0, TEXT_CHARS))
        parts += [f"<h3>{html.escape(name)}</h3>", _table(name, frame)]
    return parts


def render_report(*, title: str, summary: dict, tables: dict[str, pd.DataFrame],
                  images: dict[str, bytes], warnings: list[str] = (),
                  consistency: dict[str, pd.DataFrame] | None = None) -> str:
    """The whole page as one HTML string: one banner per line of `warnings` (e.g. a group showing no
    signal), `summary` as a definition list, then the figures in `images` (PNG bytes by file name),
    then the tables in `tables` (by CSV file name), then, when given, the `consistency` tables."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',  # no favicon request: the page loads nothing
        f"<title>{html.escape(title)}</title><style>{_STYLE}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        *(f'<div class="warning">{html.escape(line)}</div>' for line in warnings),
        '<dl class="summary">',
        *(f"<dt>{html.escape(str(k))}</dt><dd>{html.escape(str(v))}</dd>" for k, v in summary.items()),
        "</dl>",
        "<h2>Figures</h2>",
    ]
    parts += [_image(name, images[name], caption) for name, caption in FIGURES if name in images]
    known = {name for name, _, _ in SECTIONS}
    sections = SECTIONS + [(name, name, "") for name in tables if name not in known]
    for name, heading, caption in sections:
        if name not in tables:
            continue
        parts += [f'<h2 id="{html.escape(name)}">{html.escape(heading)}</h2>',
                  f'<p class="note">{html.escape(caption)} File: {html.escape(name)}.</p>' if caption else "",
                  _table(name, tables[name])]
    parts += _consistency(consistency) if consistency else []
    parts.append("</body></html>")
    return "\n".join(parts)
