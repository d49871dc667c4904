#include "web_assets.h"

namespace gradwatch::monitor {

const char* const kRunsPage = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradwatch: runs</title>
<style>
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
table { border-collapse: collapse; } td, th { padding: 4px 12px; border-bottom: 1px solid #ddd; text-align: left; }
.running { color: #2a7; } .failed, .stopped { color: #c33; } .finished { color: #555; }
</style></head><body>
<h1>gradwatch runs</h1>
<table id="runs"><thead><tr><th>run</th><th>state</th><th>mode</th><th>step</th><th>loss</th><th>grad norm</th>
<th>events</th></tr></thead><tbody></tbody></table>
<script>
const fmt = v => v === null || v === undefined ? '–' : Number(v).toPrecision(4);
// A monitor with tokens: the page's own ?token= goes along with every request.
const token = new URLSearchParams(location.search).get('token');
const withToken = path => token ? path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token) : path;
async function refresh() {
  const d = await (await fetch(withToken('/api/v1/runs'))).json();
  if (d.error) { document.querySelector('h1').textContent = 'gradwatch runs: ' + d.error; return; }
  document.querySelector('#runs tbody').innerHTML = d.runs.map(r =>
    `<tr><td><a href="${withToken('/runs/' + encodeURIComponent(r.run_id))}">${r.run_id}</a></td>` +
    `<td class="${r.state}">${r.state}</td><td>${r.mode}</td>` +
    `<td>${r.last_step}${r.total_steps ? ' / ' + r.total_steps : ''}</td><td>${fmt(r.loss)}</td>` +
    `<td>${fmt(r.grad_norm)}</td><td>${r.events}</td></tr>`).join('');
}
refresh(); setInterval(refresh, 2000);
</script></body></html>
)html";

const char* const kRunPage = R"html(<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>gradwatch: run</title>
<script src="/static/chart.min.js"></script>
<style>
body { font: 14px system-ui, sans-serif; margin: 24px; color: #222; }
.grid { display: grid; grid-template-columns: 1fr 1fr; gap: 16px; }
.panel { border: 1px solid #ddd; border-radius: 6px; padding: 8px; height: 280px; }
#state { padding: 2px 8px; border-radius: 4px; background: #eee; }
table { border-collapse: collapse; width: 100%; } td, th { padding: 3px 8px; border-bottom: 1px solid #eee; text-align: left; }
.critical { color: #c33; } .warning { color: #b80; } .command { color: #27c; }
#error { color: #c33; }
</style></head><body>
<h1>Run <span id="run"></span> <span id="state"></span></h1>
<div>step <b id="step">0</b><span id="total"></span> · mode <b id="mode"></b> ·
<b id="steps-count">0</b> steps charted · <b id="events-count">0</b> events · <b id="commands-count">0</b> commands
<span id="error"></span></div>
<div class="grid">
  <div class="panel"><canvas id="loss"></canvas></div>
  <div class="panel"><canvas id="jaccard"></canvas></div>
  <div class="panel"><canvas id="norm"></canvas></div>
  <div class="panel"><table><thead><tr><th>step</th><th>what</th></tr></thead><tbody id="timeline"></tbody></table></div>
</div>
<script>
const runId = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop());
document.getElementById('run').textContent = runId;
const line = (label, color, extra) => Object.assign({label, data: [], borderColor: color, backgroundColor: color,
  pointRadius: 0, borderWidth: 1.5, spanGaps: true}, extra || {});
const marks = (label, color, style) => ({label, data: [], type: 'scatter', pointStyle: style, pointRadius: 7,
  borderColor: color, backgroundColor: color});
function chart(id, title, datasets, log) {
  return new Chart(document.getElementById(id), {type: 'line', data: {datasets}, options: {
    animation: false, parsing: false, maintainAspectRatio: false,
    scales: {x: {type: 'linear', title: {display: true, text: 'step'}}, y: {type: log ? 'logarithmic' : 'linear'}},
    plugins: {title: {display: true, text: title}}}});
}
const loss = chart('loss', 'Loss', [line('train', '#1f77b4'), line('validation', '#ff7f0e', {pointRadius: 2}),
  marks('events', '#d62728', 'triangle'), marks('commands', '#2ca02c', 'rectRot')]);
const jac = chart('jaccard', 'Jaccard (IoU)', [line('train soft', '#1f77b4'), line('train hard', '#9467bd'),
  line('val soft', '#ff7f0e', {pointRadius: 2}), line('val hard', '#8c564b', {pointRadius: 2})]);
const norm = chart('norm', 'Global gradient norm (log axis)', [line('grad norm', '#1f77b4'),
  line('clipping threshold', '#d62728', {borderDash: [6, 3]}),
  marks('events', '#d62728', 'triangle'), marks('commands', '#2ca02c', 'rectRot')], true);
let after = 0, charted = 0, lastLoss = {}, lastNorm = {};
// A monitor with tokens: the page's own ?token= goes along with every request.
const token = new URLSearchParams(location.search).get('token');
const withToken = path => token ? path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token) : path;
const positive = v => v !== null && v > 0 ? v : null;
async function poll() {
  let d;
  try { d = await (await fetch(withToken(`/api/v1/runs/${encodeURIComponent(runId)}/steps?after=${after}`))).json(); }
  catch (e) { document.getElementById('error').textContent = ' (monitor unreachable)'; return; }
  if (d.error) { document.getElementById('error').textContent = ' ' + d.error; return; }
  document.getElementById('error').textContent = '';
  for (const [step, l, g, lr, js, jh, clip] of d.steps) {
    loss.data.datasets[0].data.push({x: step, y: l});
    jac.data.datasets[0].data.push({x: step, y: js}); jac.data.datasets[1].data.push({x: step, y: jh});
    norm.data.datasets[0].data.push({x: step, y: positive(g)});
    norm.data.datasets[1].data.push({x: step, y: positive(clip)});
    lastLoss[step] = l; lastNorm[step] = positive(g);
    after = Math.max(after, step); charted++;
  }
  for (const [step, l, js, jh] of d.evals) {
    loss.data.datasets[1].data.push({x: step, y: l});
    jac.data.datasets[2].data.push({x: step, y: js}); jac.data.datasets[3].data.push({x: step, y: jh});
  }
  const at = (m, s) => m[s] !== undefined && m[s] !== null ? m[s] : null;
  loss.data.datasets[2].data = d.events.map(e => ({x: e.step, y: at(lastLoss, e.step) ?? 1}));
  loss.data.datasets[3].data = d.commands.filter(c => c.applied_at_step).map(c => ({x: c.applied_at_step, y: at(lastLoss, c.applied_at_step) ?? 1}));
  norm.data.datasets[2].data = d.events.map(e => ({x: e.step, y: at(lastNorm, e.step) ?? 1}));
  norm.data.datasets[3].data = d.commands.filter(c => c.applied_at_step).map(c => ({x: c.applied_at_step, y: at(lastNorm, c.applied_at_step) ?? 1}));
  const rows = d.events.map(e => ({step: e.step, cls: e.severity, text: `${e.severity} ${e.kind}: ${e.message}` +
      (e.first_layer ? ` (first layer: ${e.first_layer})` : '')}))
    .concat(d.commands.map(c => ({step: c.applied_at_step ?? c.issued_at_step, cls: 'command',
      text: `${c.id} ${c.action} by ${c.issued_by}: ${c.reason}` + (c.applied_at_step ? '' : ' (not acknowledged)')})))
    .sort((a, b) => a.step - b.step);
  document.getElementById('timeline').innerHTML =
    rows.map(r => `<tr class="${r.cls}"><td>${r.step}</td><td>${r.text.replace(/</g, '&lt;')}</td></tr>`).join('');
  document.getElementById('state').textContent = d.run.state;
  document.getElementById('mode').textContent = d.run.mode;
  document.getElementById('step').textContent = d.run.last_step;
  document.getElementById('total').textContent = d.run.total_steps ? ' / ' + d.run.total_steps : '';
  document.getElementById('steps-count').textContent = charted;
  document.getElementById('events-count').textContent = d.events.length;
  document.getElementById('commands-count').textContent = d.commands.length;
  loss.update('none'); jac.update('none'); norm.update('none');
}
poll(); setInterval(poll, 1000);
</script></body></html>
)html";

}  // namespace gradwatch::monitor
