// The compare page (/compare?runs=A,B): several runs' loss, global gradient norm, Jaccard and
// learning rate overlaid on step, each run in its colour, polled live like the run page.
'use strict';

const runIds = (new URLSearchParams(location.search).get('runs') || '').split(',').filter(Boolean);
const palette = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];
document.getElementById('home').href = gw.withToken('/');
document.title = 'gradwatch: compare ' + runIds.join(', ');

const loss = gw.chart('loss', 'Loss', false);
const norm = gw.chart('norm', 'Global gradient norm', true);
const jac = gw.chart('jaccard', 'Jaccard (IoU), soft', false);
const lr = gw.chart('lr', 'Learning rate', true);
gw.logToggle(loss, 'loss-log');
gw.logToggle(norm, 'norm-log');

// Per run: its datasets on each chart, where its polling has got to, its events and commands.
const runs = runIds.map((id, i) => {
  const color = palette[i % palette.length];
  const r = {id, color, after: 0, marks: [],
    loss: gw.line(id, color), val: gw.line(id + ' val', color, {borderDash: [2, 3], pointRadius: 2, pointStyle: 'circle'}),
    norm: gw.line(id, color), jac: gw.line(id, color), valJac: gw.line(id + ' val', color, {borderDash: [2, 3]}),
    lr: gw.line(id, color)};
  loss.data.datasets.push(r.loss, r.val);
  norm.data.datasets.push(r.norm);
  jac.data.datasets.push(r.jac, r.valJac);
  lr.data.datasets.push(r.lr);
  return r;
});
document.getElementById('runs-legend').innerHTML = runs.map(r =>
  `<li><span class="swatch" style="background:${r.color}"></span>` +
  `<a href="${gw.escapeHtml(gw.withToken('/runs/' + encodeURIComponent(r.id)))}">${gw.escapeHtml(r.id)}</a> ` +
  `<span id="run-${gw.escapeHtml(r.id)}"></span></li>`).join('');

async function pollRun(r) {
  let d;
  try { d = await gw.getJson(`/api/v1/runs/${encodeURIComponent(r.id)}/steps?after=${r.after}`); }
  catch (e) { d = {error: 'monitor unreachable'}; }
  const status = document.getElementById('run-' + r.id);
  if (d.error) { status.innerHTML = `<span class="error">${gw.escapeHtml(d.error)}</span>`; return; }
  for (const [step, l, g, rate, js] of d.steps) {
    r.loss.data.push({x: step, y: l});
    r.norm.data.push({x: step, y: gw.positive(g)});
    r.jac.data.push({x: step, y: js});
    r.lr.data.push({x: step, y: gw.positive(rate)});
    r.after = Math.max(r.after, step);
  }
  for (const [step, l, js] of d.evals) {
    r.val.data.push({x: step, y: l});
    r.valJac.data.push({x: step, y: js});
  }
  r.marks = gw.marksOf(d, r.id, r.color);
  status.textContent = `${d.run.state}, step ${d.run.last_step}` + (d.run.total_steps ? ` / ${d.run.total_steps}` : '') +
    `, ${d.events.length} events, ${d.commands.length} commands`;
}

async function poll() {
  await Promise.all(runs.map(pollRun));
  const marks = runs.flatMap(r => r.marks).sort((a, b) => a.step - b.step);
  gw.markers(loss, marks); gw.markers(norm, marks);
  for (const c of [loss, norm, jac, lr]) c.update('none');
  gw.publish({runs: runIds, charts: {loss: gw.describe(loss), norm: gw.describe(norm), jaccard: gw.describe(jac),
                                     lr: gw.describe(lr)}});
}
poll(); setInterval(poll, 1000);
