"""A graph neighbourhood drawn as SVG on the server (nothing fetched by the browser)."""

from __future__ import annotations

from html import escape

import networkx as nx

COLOURS = {"concept": "#2b7bb9", "document": "#e08a1e", "domain": "#3a9d5d", "expert": "#b5485d"}
WIDTH, HEIGHT, MARGIN = 900, 640, 60


def render_svg(graph: nx.Graph, *, center: str | None = None) -> str:
    """Nodes coloured by kind (concept, document, domain, expert), edges by weight."""
    if graph.number_of_nodes() == 0:
        return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="80">'
                '<text x="10" y="40">No concepts yet: ingest some documents.</text></svg>')
    layout = nx.spring_layout(graph, seed=7, weight="weight")
    xs = [p[0] for p in layout.values()]
    ys = [p[1] for p in layout.values()]
    span_x, span_y = (max(xs) - min(xs)) or 1.0, (max(ys) - min(ys)) or 1.0

    def at(node: str) -> tuple[float, float]:
        x, y = layout[node]
        return (MARGIN + (x - min(xs)) / span_x * (WIDTH - 2 * MARGIN),
                MARGIN + (y - min(ys)) / span_y * (HEIGHT - 2 * MARGIN))

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
             'font-family="sans-serif" font-size="11">']
    top = max((d.get("weight", 1.0) for _, _, d in graph.edges(data=True)), default=1.0) or 1.0
    for u, v, data in graph.edges(data=True):
        (x1, y1), (x2, y2) = at(u), at(v)
        width = 0.5 + 3 * data.get("weight", 1.0) / top
        parts.append(f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
                     f'stroke="#999" stroke-width="{width:.2f}"><title>'
                     f'{escape(str(data.get("kind", "")))}</title></line>')
    for node, data in graph.nodes(data=True):
        x, y = at(node)
        kind = data.get("kind", "concept")
        radius = 9 if node == center else 6
        label = escape(str(data.get("label", node)))[:40]
        parts.append(f'<g class="node {kind}"><circle cx="{x:.1f}" cy="{y:.1f}" r="{radius}" '
                     f'fill="{COLOURS.get(kind, "#666")}"><title>{escape(node)}</title></circle>'
                     f'<text x="{x + 8:.1f}" y="{y + 4:.1f}">{label}</text></g>')
    parts.append("</svg>")
    return "".join(parts)
