"""An interactive SVG flame graph: hover for details, click to zoom, search by regex."""

from __future__ import annotations

import html
import zlib
from collections import Counter

from ebpf_otlp.export import folded
from ebpf_otlp.records import Profile

WIDTH = 1200
FRAME_H = 16
PAD_TOP = 40
PAD_BOTTOM = 28
MIN_WIDTH_PX = 0.3   # narrower frames are not drawn (still counted in their parents)


class _Node:
    __slots__ = ("name", "total", "children")

    def __init__(self, name: str):
        self.name = name
        self.total = 0
        self.children: dict[str, _Node] = {}


def build_tree(stacks: Counter[tuple[str, ...]]) -> _Node:
    root = _Node("all")
    for stack, count in stacks.items():
        root.total += count
        node = root
        for name in stack:
            node = node.children.setdefault(name, _Node(name))
            node.total += count
    return root


def _color(name: str, depth: int) -> str:
    h = zlib.crc32(name.encode())
    if name.endswith("_[k]"):
        return f"rgb({200 + h % 55},{110 + h % 60},{40 + h % 30})"      # kernel: orange
    if depth == 1:
        return "rgb(180,180,200)"                                      # process
    if name.startswith("[unknown]") or "+0x" in name:
        return "rgb(190,190,190)"
    if name.startswith(("LazyCompile:", "JS:", "Function:", "[jit]")) or name.startswith("*"):
        return f"rgb({50 + h % 50},{170 + h % 60},{70 + h % 40})"      # JIT: green
    return f"rgb({215 + h % 40},{90 + h % 120},{40 + h % 40})"         # user: warm


def render(profile: Profile, title: str | None = None) -> str:
    shown = profile.shown
    title = title or {"samples": "CPU flame graph", "off_cpu": "Off-CPU flame graph"}.get(
        shown.type, f"{shown.type} flame graph")
    unit = {"count": shown.type, "nanoseconds": "ns", "bytes": "bytes"}.get(shown.unit, shown.unit)
    return render_stacks(folded.fold(profile), title,
                         subtitle=f"{profile.what}, {profile.amount(profile.total())}", unit=unit)


def render_stacks(stacks: Counter[tuple[str, ...]], title: str, subtitle: str = "",
                  unit: str = "samples") -> str:
    root = build_tree(stacks)
    total = max(root.total, 1)
    scale = WIDTH / total
    frames: list[str] = []
    max_depth = 0

    def walk(node: _Node, x: int, depth: int) -> None:
        nonlocal max_depth
        w_px = node.total * scale
        if w_px < MIN_WIDTH_PX:
            return
        max_depth = max(max_depth, depth)
        frames.append(_frame(node, x, depth, total, unit))
        cx = x
        for child in sorted(node.children.values(), key=lambda c: c.name):
            walk(child, cx, depth + 1)
            cx += child.total

    walk(root, 0, 0)
    height = PAD_TOP + (max_depth + 1) * FRAME_H + PAD_BOTTOM
    return _TEMPLATE.format(
        width=WIDTH, height=height, title=html.escape(title), subtitle=html.escape(subtitle),
        total=total, unit=unit, frame_h=FRAME_H, base=height - PAD_BOTTOM, frames="\n".join(frames),
        status_y=height - 8, script=_SCRIPT)


def _frame(node: _Node, x: int, depth: int, total: int, unit: str) -> str:
    name = html.escape(node.name, quote=True)
    pct = 100.0 * node.total / total
    # Geometry in samples (data-x/data-w) so the script can zoom; drawn positions in px.
    px = x * WIDTH / total
    pw = node.total * WIDTH / total
    y = -(depth + 1) * FRAME_H
    label = node.name if pw > 30 else ""
    return (f'<g class="f" data-n="{name}" data-x="{x}" data-w="{node.total}" data-d="{depth}">'
            f'<title>{name} ({node.total} {unit}, {pct:.2f}%)</title>'
            f'<rect x="{px:.2f}" y="{y}" width="{max(pw - 0.5, 0.1):.2f}" height="{FRAME_H - 1}" '
            f'fill="{_color(node.name, depth)}" rx="2"/>'
            f'<text x="{px + 3:.2f}" y="{y + FRAME_H - 4}">{html.escape(label)}</text></g>')


_TEMPLATE = """<?xml version="1.0" standalone="no"?>
<svg version="1.1" width="{width}" height="{height}" viewBox="0 0 {width} {height}"
     xmlns="http://www.w3.org/2000/svg" data-total="{total}" data-unit="{unit}" data-frame-h="{frame_h}">
<style>
  text {{ font-family: Verdana, sans-serif; font-size: 11px; fill: #000; pointer-events: none; }}
  .f:hover rect {{ stroke: #000; stroke-width: 0.5; cursor: pointer; }}
  .f.hit rect {{ fill: rgb(230,0,230); }}
  .f.off {{ display: none; }}
  #title {{ font-size: 16px; text-anchor: middle; }}
  .btn {{ cursor: pointer; fill: #333; font-size: 12px; pointer-events: all; }}
</style>
<rect width="100%" height="100%" fill="#f8f8f0"/>
<text id="title" x="{width_half}" y="18">{title}</text>
<text x="10" y="34" fill="#555">{subtitle}</text>
<text id="reset" class="btn" x="10" y="18" style="display:none">Reset zoom</text>
<text id="search" class="btn" x="{search_x}" y="18">Search</text>
<text id="matched" x="{search_x}" y="34"></text>
<g id="frames" transform="translate(0,{base})">
{frames}
</g>
<text id="status" x="10" y="{status_y}"> </text>
<script type="text/ecmascript"><![CDATA[
{script}
]]></script>
</svg>
"""
_TEMPLATE = _TEMPLATE.replace("{width_half}", str(WIDTH // 2)).replace("{search_x}", str(WIDTH - 110))

_SCRIPT = r"""
(function () {
  var svg = document.documentElement, W = svg.viewBox.baseVal.width;
  var total = +svg.getAttribute('data-total');
  var unit = svg.getAttribute('data-unit');
  var frames = Array.prototype.slice.call(document.querySelectorAll('.f'));
  var status = document.getElementById('status'), reset = document.getElementById('reset');
  function fit(g, x0, span) {
    var x = (+g.dataset.x - x0) * W / span, w = +g.dataset.w * W / span;
    var r = g.querySelector('rect'), t = g.querySelector('text'), name = g.dataset.n;
    r.setAttribute('x', x); r.setAttribute('width', Math.max(w - 0.5, 0.1));
    t.setAttribute('x', x + 3);
    var room = Math.floor((w - 6) / 7);
    t.textContent = room < 3 ? '' : (name.length <= room ? name : name.slice(0, room - 2) + '..');
  }
  function zoom(g) {
    var x0 = +g.dataset.x, w0 = +g.dataset.w, d0 = +g.dataset.d;
    frames.forEach(function (f) {
      var x = +f.dataset.x, w = +f.dataset.w, d = +f.dataset.d;
      var inside = x >= x0 && x + w <= x0 + w0 && d >= d0;
      var ancestor = d < d0 && x <= x0 && x + w >= x0 + w0;
      f.classList.toggle('off', !(inside || ancestor));
      if (inside) fit(f, x0, w0); else if (ancestor) fit(f, x0, w0);
    });
    reset.style.display = d0 > 0 ? '' : 'none';
  }
  frames.forEach(function (f) {
    fit(f, 0, total);
    f.addEventListener('click', function () { zoom(f); });
    f.addEventListener('mouseover', function () {
      status.textContent = f.dataset.n + ' (' + f.dataset.w + ' ' + unit + ', ' +
        (100 * f.dataset.w / total).toFixed(2) + '%)';
    });
    f.addEventListener('mouseout', function () { status.textContent = ' '; });
  });
  reset.addEventListener('click', function () { zoom(frames[0]); });
  function search(term) {
    var re, hits = [];
    try { re = new RegExp(term); } catch (e) { return; }
    frames.forEach(function (f) {
      var hit = !!term && re.test(f.dataset.n);
      f.classList.toggle('hit', hit);
      if (hit) hits.push(f);
    });
    // Count each matched sample once: skip hits nested inside an earlier hit.
    hits.sort(function (a, b) { return a.dataset.x - b.dataset.x || a.dataset.d - b.dataset.d; });
    var covered = 0, end = -1;
    hits.forEach(function (f) {
      var x = +f.dataset.x, w = +f.dataset.w;
      if (x >= end) { covered += w; end = x + w; }
    });
    document.getElementById('matched').textContent =
      term ? 'Matched: ' + (100 * covered / total).toFixed(1) + '%' : '';
  }
  document.getElementById('search').addEventListener('click', function () {
    search(prompt('Search (regular expression)', '') || '');
  });
  window.flamegraphSearch = search;
  document.addEventListener('keydown', function (e) {
    if ((e.ctrlKey || e.metaKey) && e.key === 'f') { e.preventDefault();
      search(prompt('Search (regular expression)', '') || ''); }
  });
})();
"""
