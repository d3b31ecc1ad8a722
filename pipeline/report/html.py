"""The report as one self-contained HTML page: inline CSS, inline SVG, data: thumbnails.

No script, font, stylesheet or image is fetched: a Content-Security-Policy
(`default-src 'none'`) makes the browser refuse any request the page might
otherwise make, and the page runs no JavaScript at all. Every string that comes
from the data (URIs, file names, labels, error messages) goes through `esc`:
image names are user input, and a file called `<img src=x onerror=...>.jpg`
must show as text.
"""
from __future__ import annotations

import html
import os
import pathlib
import urllib.parse
from typing import Iterable, Sequence

from pipeline.report.build import Header, Report, Tile
from pipeline.report.drift import Drift

CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
TOP_LABELS_SHOWN = 20


def esc(value: object) -> str:
    return html.escape(str(value), quote=True)


def file_name(uri: str) -> str:
    return uri.rstrip('/').rsplit('/', 1)[-1] or uri


def uri_link(uri: str) -> str | None:
    """Where a tile links: the object in the Cloud console, or the local file; None for
    schemes a browser cannot open (never a `javascript:` URL: a path is always a path)."""
    if uri.startswith('gs://'):
        return 'https://storage.cloud.google.com/' + urllib.parse.quote(uri[len('gs://'):])
    if uri.startswith(('http://', 'https://')):
        return uri
    if '://' in uri:
        return None
    return pathlib.Path(os.path.abspath(uri)).as_uri()


def plural(n: int, word: str) -> str:
    return f'{n} {word}' + ('' if n == 1 else 's')


def _pct(x: float) -> str:
    return f'{100 * x:.1f}%'


# --- charts (inline SVG) ---------------------------------------------------------

def bar_chart(rows: Sequence[tuple[str, float, str]], *, width: int = 640, label_w: int = 210,
              row_h: int = 20, title: str) -> str:
    """Horizontal bars: (label, value, text shown after the bar)."""
    if not rows:
        return '<p class="muted">nothing to chart</p>'
    top = max(v for _, v, _ in rows) or 1.0
    bar_w = width - label_w - 80
    h = row_h * len(rows) + 4
    parts = [f'<svg class="chart" role="img" width="{width}" height="{h}" '
             f'viewBox="0 0 {width} {h}"><title>{esc(title)}</title>']
    for i, (label, value, text) in enumerate(rows):
        y = i * row_h + 2
        w = max(1.0, bar_w * value / top)
        parts.append(
            f'<g><title>{esc(label)}: {esc(text)}</title>'
            f'<text x="{label_w - 6}" y="{y + row_h * 0.7:.1f}" text-anchor="end">'
            f'{esc(label)}</text>'
            f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row_h - 5}" '
            f'class="bar"/><text x="{label_w + w + 5:.1f}" y="{y + row_h * 0.7:.1f}">'
            f'{esc(text)}</text></g>')
    parts.append('</svg>')
    return ''.join(parts)


def histogram_chart(edges: Sequence[float], counts: Sequence[int], threshold: float, *,
                    width: int = 640, height: int = 180) -> str:
    """Vertical bars over [0, 1]; bins below the threshold are shaded as low confidence."""
    pad_l, pad_b, pad_t = 40, 28, 8
    plot_w, plot_h = width - pad_l - 10, height - pad_b - pad_t
    top = max(counts) if counts and max(counts) else 1
    n = len(counts)
    parts = [f'<svg class="chart" role="img" width="{width}" height="{height}" '
             f'viewBox="0 0 {width} {height}"><title>top-1 score histogram</title>']
    for i, c in enumerate(counts):
        x = pad_l + plot_w * i / n
        h = plot_h * c / top
        cls = 'bar low' if edges[i + 1] <= threshold + 1e-9 else 'bar'
        parts.append(f'<g><title>{edges[i]:.2f}–{edges[i + 1]:.2f}: {c} images</title>'
                     f'<rect class="{cls}" x="{x + 1:.1f}" y="{pad_t + plot_h - h:.1f}" '
                     f'width="{plot_w / n - 2:.1f}" height="{h:.1f}"/></g>')
    for tick in (0.0, 0.25, 0.5, 0.75, 1.0):
        x = pad_l + plot_w * tick
        parts.append(f'<text x="{x:.1f}" y="{height - 8}" text-anchor="middle">{tick:g}</text>')
    tx = pad_l + plot_w * threshold
    parts.append(f'<line class="threshold" x1="{tx:.1f}" x2="{tx:.1f}" y1="{pad_t}" '
                 f'y2="{pad_t + plot_h}"/><text x="{pad_l - 6}" y="{pad_t + 10}" '
                 f'text-anchor="end">{top}</text>'
                 f'<text x="{pad_l - 6}" y="{pad_t + plot_h}" text-anchor="end">0</text></svg>')
    return ''.join(parts)


def drift_chart(drift: Drift, *, width: int = 640, label_w: int = 210, row_h: int = 20) -> str:
    """Diverging bars in share points: risers right (this run more), fallers left."""
    rows = [(c.label, c.points) for c in drift.risers] + [(c.label, c.points)
                                                          for c in drift.fallers]
    if not rows:
        return '<p class="muted">no label changed its share</p>'
    span = max(abs(p) for _, p in rows) or 1.0
    half = (width - label_w - 20) / 2
    mid = label_w + half
    h = row_h * len(rows) + 4
    parts = [f'<svg class="chart" role="img" width="{width}" height="{h}" '
             f'viewBox="0 0 {width} {h}"><title>label share change, points</title>'
             f'<line class="axis" x1="{mid:.1f}" x2="{mid:.1f}" y1="0" y2="{h}"/>']
    for i, (label, points) in enumerate(rows):
        y = i * row_h + 2
        w = max(1.0, (half - 45) * abs(points) / span)
        x = mid if points >= 0 else mid - w
        tx = mid + w + 4 if points >= 0 else mid - w - 4
        anchor = 'start' if points >= 0 else 'end'
        parts.append(
            f'<g><title>{esc(label)}: {points:+.1f} points</title>'
            f'<text x="{label_w - 6}" y="{y + row_h * 0.7:.1f}" text-anchor="end">{esc(label)}'
            f'</text><rect class="bar {"up" if points >= 0 else "down"}" x="{x:.1f}" '
            f'y="{y + 2}" width="{w:.1f}" height="{row_h - 5}"/>'
            f'<text x="{tx:.1f}" y="{y + row_h * 0.7:.1f}" text-anchor="{anchor}">'
            f'{points:+.1f}</text></g>')
    parts.append('</svg>')
    return ''.join(parts)


# --- sections -------------------------------------------------------------------

def _facts(rows: Iterable[tuple[str, object]]) -> str:
    return '<table class="facts">' + ''.join(
        f'<tr><th>{esc(k)}</th><td>{esc(v)}</td></tr>' for k, v in rows) + '</table>'


def _join(values: Sequence[str]) -> str:
    return ', '.join(values) if values else '–'


def header_facts(h: Header) -> list[tuple[str, object]]:
    return [
        ('output', h.output),
        ('run id', _join(h.run_ids)),
        ('model', _join(h.models)),
        ('model_id', _join(h.model_ids)),
        ('rows written', f'{h.first_row_at or "–"} to {h.last_row_at or "–"} (UTC)'),
        ('images', f'{plural(h.inputs, "input")} (listed {h.listed}): '
                   + (f'{h.skipped} skipped as unchanged by --skip_existing '
                      + ('(their rows are in earlier dates), ' if h.one_incremental_night else
                         '(their rows are in earlier dates, some in this report), ')
                      if h.skipped else '')
                   + f'{h.labeled} labeled'
                   + (f' ({h.reused} of them copied from an earlier row)' if h.reused else '')
                   + f', {plural(h.errors, "error")}'),
        ('read retries', '–' if h.read_retries is None else h.read_retries),
        ('time', '–' if h.seconds is None else
         f'{h.seconds:.1f} s, {h.images_per_second or 0:.1f} images/s'),
        ('summary.json', f'{h.summaries} found' if h.summaries else
         'none (a Dataflow run: counts from the tables)'),
    ]


def tile_html(t: Tile) -> str:
    name = file_name(t.uri)
    link = uri_link(t.uri)
    if t.thumbnail.data_uri:
        pic = f'<img src="{esc(t.thumbnail.data_uri)}" alt="{esc(name)}" width="112" height="112">'
    else:
        pic = (f'<div class="grey" title="{esc(t.thumbnail.reason)}">cannot show: '
               f'{esc(t.thumbnail.reason)}</div>')
    if link:
        pic = f'<a href="{esc(link)}">{pic}</a>'
    labels = ''.join(f'<li><span class="lbl">{esc(label)}</span> <span class="score">'
                     f'{score:.2f}</span></li>' for label, score in t.labels[:3])
    return (f'<figure class="tile" title="{esc(t.uri)}">{pic}<figcaption>'
            f'<div class="name">{esc(name)}</div><ol>{labels}</ol></figcaption></figure>')


def drift_section(r: Report) -> str:
    d, prev = r.drift, r.previous
    note = f'<p class="note" id="drift-note">{esc(r.drift_note)}</p>' if r.drift_note else ''
    if d is None or prev is None:
        return (f'<section id="drift"><h2>Drift against the previous run</h2>{note}</section>'
                if note else '')
    lists = ''.join(
        f'<p><b>{title}</b> ({len(items)}): {esc(", ".join(items[:40]))}'
        f'{" …" if len(items) > 40 else ""}</p>'
        for title, items in (('appeared', d.appeared), ('vanished', d.vanished)))
    return (
        '<section id="drift"><h2>Drift against the previous run</h2>'
        f'<p class="big">total variation distance <b id="tv">{d.total_variation:.3f}</b> '
        '<span class="muted">(0 = the same top-label distribution, 1 = no label in '
        'common)</span></p>' + note
        + _facts([('previous output', prev.output), ('previous run id', _join(prev.run_ids)),
                  ('previous model_id', _join(prev.model_ids)),
                  ('images', f'{d.current_images} now, {d.previous_images} before')])
        + '<h3>Labels that rose and fell most (share points)</h3>' + drift_chart(d) + lists
        + '</section>')


def errors_section(r: Report) -> str:
    h = r.header
    counts = ''.join(f'<tr><td>{esc(k)}</td><td class="num">{v}</td></tr>'
                     for k, v in r.errors_by_class.items())
    rows = ''.join(
        f'<tr class="error-row"><td class="uri" title="{esc(e.uri)}">{esc(e.uri)}</td>'
        f'<td>{esc(e.stage)}</td><td>{esc(e.error)}</td><td>{esc(e.message)}</td></tr>'
        for e in r.error_rows)
    note = ('' if len(r.error_rows) == h.errors else
            f'<p class="note">showing {len(r.error_rows)} of {h.errors} errors '
            '(the first by stage, class and URI); errors-*.parquet has them all</p>')
    if not h.errors:
        return '<section id="errors"><h2>Errors</h2><p>none: every input was labeled</p></section>'
    return (f'<section id="errors"><h2>Errors ({h.errors})</h2>'
            f'<table class="counts"><thead><tr><th>class</th><th>images</th></tr></thead>'
            f'<tbody>{counts}</tbody></table>{note}'
            '<table class="errors"><thead><tr><th>URI</th><th>stage</th><th>class</th>'
            f'<th>reason</th></tr></thead><tbody>{rows}</tbody></table></section>')


def render(r: Report) -> str:
    h = r.header
    top = list(r.label_counts.items())[:TOP_LABELS_SHOWN]
    bars = bar_chart([(k, v, f'{v} ({_pct(v / h.labeled)})') for k, v in top],
                     title='most frequent top labels') if h.labeled else ''
    lc = r.low_confidence
    shown = len(r.tiles)
    if r.tiles_sampled:
        sheet_note = (f'showing {shown} of {h.labeled} labeled images: a sample stratified by '
                      f'top label (every label keeps at least one tile while --max_tiles '
                      f'{r.max_tiles} allows, the rest in proportion)')
    else:
        sheet_note = f'all {h.labeled} labeled images'
    unreadable = sum(t.thumbnail.data_uri is None for t in r.tiles)
    if unreadable:
        sheet_note += f'; {unreadable} could not be read for a thumbnail (grey tiles)'
    return f'''<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{esc(CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>imagelabel report: {esc(_join(h.run_ids))}</title>
<style>{STYLE}</style></head><body>
<header><h1>imagelabel report</h1>{_facts(header_facts(h))}</header>
<section id="overview"><div class="cards">
<div class="card"><div class="n">{h.labeled}</div>labeled</div>
<div class="card"><div class="n">{h.errors}</div>errors</div>
<div class="card"><div class="n" id="low-share">{_pct(lc.share)}</div>top-1 score below {lc.threshold:g}
({lc.images} images)</div>
<div class="card"><div class="n">{len(r.label_counts)}</div>distinct top labels</div>
</div></section>
{drift_section(r)}
<section id="labels"><h2>Most frequent top labels</h2>{bars}</section>
<section id="scores"><h2>Top-1 scores</h2>
{histogram_chart(r.scores.edges, r.scores.counts, lc.threshold)}
<p>{_pct(lc.share)} of labeled images ({lc.images} of {h.labeled}) have a top-1 score below
--low_confidence {lc.threshold:g} (shaded bins, dashed line).</p></section>
<section id="sheet"><h2>Contact sheet</h2><p class="note" id="sheet-note">{esc(sheet_note)}</p>
<div class="sheet">{"".join(tile_html(t) for t in r.tiles)}</div></section>
{errors_section(r)}
<footer class="muted">made by imagelabel report; figures also in report.json</footer>
</body></html>
'''


STYLE = '''
body{font:14px/1.4 system-ui,-apple-system,"Segoe UI",sans-serif;margin:24px;color:#222}
h1{margin:0 0 8px}h2{margin:28px 0 8px;border-bottom:1px solid #ddd}
.facts th{text-align:left;padding-right:14px;color:#555;font-weight:normal;vertical-align:top}
.facts td{word-break:break-all}
.cards{display:flex;gap:12px;flex-wrap:wrap;margin-top:12px}
.card{border:1px solid #ddd;border-radius:6px;padding:8px 14px;min-width:120px}
.card .n{font-size:22px;font-weight:600}
.chart text{font-size:12px;fill:#333}.bar{fill:#4a79b8}.bar.low{fill:#d08a3a}
.bar.up{fill:#3a9a5b}.bar.down{fill:#c0504d}.axis{stroke:#999}
.threshold{stroke:#333;stroke-dasharray:4 3}
.sheet{display:flex;flex-wrap:wrap;gap:8px}
.tile{margin:0;width:124px;border:1px solid #e3e3e3;border-radius:4px;padding:5px;
 background:#fafafa;overflow:hidden}
.tile img{display:block;width:112px;height:112px;margin:auto}
.tile .grey{width:112px;height:112px;background:#bbb;color:#222;font-size:11px;
 overflow:hidden;word-break:break-all;padding:4px;box-sizing:border-box}
.tile .name{font-size:11px;color:#555;white-space:nowrap;overflow:hidden;text-overflow:ellipsis}
.tile ol{margin:2px 0 0;padding-left:16px;font-size:11px}.score{color:#777}
.note,.muted{color:#666}.big{font-size:16px}
table.errors,table.counts{border-collapse:collapse;margin:8px 0}
table.errors td,table.errors th,table.counts td,table.counts th{border:1px solid #ddd;
 padding:3px 6px;text-align:left;vertical-align:top}
td.uri{max-width:420px;word-break:break-all}td.num{text-align:right}
'''
