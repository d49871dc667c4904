// The pages' HTML. Their scripts are web/*.js (served from kStaticAssets); the runs list is
// small enough to keep its script here.
#include "web_assets.h"

namespace gradwatch::monitor {

const char* const kRunsPage = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradwatch: runs</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; } td, th { padding: 4px 12px; border-bottom: 1px solid #ddd; text-align: left; }
.running { color: #2a7; } .failed, .stopped { color: #c33; } .finished { color: #555; }
#compare[aria-disabled="true"] { color: #999; pointer-events: none; }
</style></head><body>
<h1>gradwatch runs</h1>
<p>Tick runs to overlay them: <a id="compare" href="#" aria-disabled="true">compare selected runs</a>
<span id="picked"></span></p>
<table id="runs"><thead><tr><th></th><th>run</th><th>state</th><th>mode</th><th>step</th><th>loss</th><th>grad norm</th>
<th>events</th></tr></thead><tbody></tbody></table>
<script>
const fmt = v => v === null || v === undefined ? '–' : Number(v).toPrecision(4);
const esc = s => String(s).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);
// A monitor with tokens: the page's own ?token= goes along with every request.
const token = new URLSearchParams(location.search).get('token');
const withToken = path => token ? path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token) : path;
const maxCompare = 8, picked = new Set();
function showPicked() {
  const link = document.getElementById('compare');
  const ok = picked.size >= 1 && picked.size <= maxCompare;
  link.setAttribute('aria-disabled', String(!ok));
  link.href = ok ? withToken('/compare?runs=' + [...picked].map(encodeURIComponent).join(',')) : '#';
  document.getElementById('picked').textContent = picked.size > maxCompare ?
    `(at most ${maxCompare} runs; ${picked.size} ticked)` : picked.size ? `(${[...picked].join(', ')})` : '';
}
function pick(box) { box.checked ? picked.add(box.value) : picked.delete(box.value); showPicked(); }
async function refresh() {
  const d = await (await fetch(withToken('/api/v1/runs'))).json();
  if (d.error) { document.querySelector('h1').textContent = 'gradwatch runs: ' + d.error; return; }
  document.querySelector('#runs tbody').innerHTML = d.runs.map(r =>
    `<tr><td><input type="checkbox" value="${esc(r.run_id)}" onchange="pick(this)"` +
    `${picked.has(r.run_id) ? ' checked' : ''} aria-label="compare ${esc(r.run_id)}"></td>` +
    `<td><a href="${esc(withToken('/runs/' + encodeURIComponent(r.run_id)))}">${esc(r.run_id)}</a></td>` +
    `<td class="${esc(r.state)}">${esc(r.state)}</td><td>${esc(r.mode)}</td>` +
    `<td>${r.last_step}${r.total_steps ? ' / ' + r.total_steps : ''}</td><td>${fmt(r.loss)}</td>` +
    `<td>${fmt(r.grad_norm)}</td><td>${r.events}</td></tr>`).join('');
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
)html";

// Chart.js, then the plugins (hammer.js is the zoom plugin's touch support), then gradwatch's
// script and style.
#define GW_PAGE_SCRIPTS                                                                          \
  "<script src=\"/static/chart.min.js\"></script>\n"                                             \
  "<script src=\"/static/hammer.min.js\"></script>\n"                                            \
  "<script src=\"/static/chartjs-plugin-zoom.min.js\"></script>\n"                               \
  "<script src=\"/static/chartjs-plugin-annotation.min.js\"></script>\n"                         \
  "<script src=\"/static/charts.js\"></script>\n"                                              \
  "<link rel=\"stylesheet\" href=\"/static/pages.css\">\n"

const char* const kRunPage = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradwatch: run</title>
)html" GW_PAGE_SCRIPTS R"html(
<style>
.timeline { overflow-y: auto; }
#heatmap-panel { height: auto; margin-top: 16px; }
#heatmap { width: 100%; display: block; }
#heatmap-hover { min-height: 1.2em; }
#scalars-panel { display: none; margin-top: 16px; }
</style></head><body>
<h1>Run <span id="run"></span> <span id="state"></span></h1>
<div>step <b id="step">0</b><span id="total"></span> · mode <b id="mode"></b> ·
<b id="steps-count">0</b> steps charted · <b id="events-count">0</b> events · <b id="commands-count">0</b> commands
<span id="error" class="error"></span></div>
<p class="hint">Drag across a chart to zoom in on steps, ctrl + wheel to zoom, shift + drag to pan,
double-click to zoom out. Vertical lines: events (red, amber) and commands (blue, dashed).</p>
<div class="grid">
  <div class="panel"><div class="tools"><label><input type="checkbox" id="loss-log"> log axis</label></div>
    <div class="chart"><canvas id="loss"></canvas></div></div>
  <div class="panel"><div class="chart"><canvas id="jaccard"></canvas></div></div>
  <div class="panel"><div class="tools"><label><input type="checkbox" id="norm-log" checked> log axis</label></div>
    <div class="chart"><canvas id="norm"></canvas></div></div>
  <div class="panel timeline"><table><thead><tr><th>step</th><th>what</th></tr></thead><tbody id="timeline"></tbody></table></div>
</div>
<div class="panel" id="scalars-panel"><div class="chart"><canvas id="scalars"></canvas></div></div>
<div class="panel" id="heatmap-panel">
  <b>Per-layer gradient norm (log10), layer × step</b>
  <span class="hint">each column a range of steps, the mean of log10 norms; the layer an event named first is red</span>
  <canvas id="heatmap" height="200"></canvas>
  <div id="heatmap-hover" class="hint"></div>
</div>
<pre id="page-state" hidden></pre>
<script src="/static/run.js"></script>
</body></html>
)html";

const char* const kComparePage = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradwatch: compare runs</title>
)html" GW_PAGE_SCRIPTS R"html(
<style>
#runs-legend span.swatch { display: inline-block; width: 24px; height: 3px; vertical-align: middle; margin-right: 4px; }
#runs-legend li { margin: 2px 0; }
</style></head><body>
<h1>Compare runs <a class="hint" id="home" href="/">all runs</a></h1>
<ul id="runs-legend"></ul>
<p class="hint">Aligned on step. Solid: train; dotted: validation. Drag to zoom, double-click to zoom out;
vertical lines mark each run's events and commands in its colour.</p>
<div class="grid">
  <div class="panel"><div class="tools"><label><input type="checkbox" id="loss-log"> log axis</label></div>
    <div class="chart"><canvas id="loss"></canvas></div></div>
  <div class="panel"><div class="tools"><label><input type="checkbox" id="norm-log" checked> log axis</label></div>
    <div class="chart"><canvas id="norm"></canvas></div></div>
  <div class="panel"><div class="chart"><canvas id="jaccard"></canvas></div></div>
  <div class="panel"><div class="chart"><canvas id="lr"></canvas></div></div>
</div>
<pre id="page-state" hidden></pre>
<script src="/static/compare.js"></script>
</body></html>
)html";

#undef GW_PAGE_SCRIPTS

}  // namespace gradwatch::monitor
