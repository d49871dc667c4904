// The run page (/runs/RUN): loss, Jaccard and global gradient norm charted live from
// /api/v1/runs/RUN/steps, events and commands marked on the charts and listed, user scalars
// when steps carry them, and a layer x step heat map of log10 per-layer gradient norms.
'use strict';

const runId = decodeURIComponent(location.pathname.split('/').filter(Boolean).pop());
document.getElementById('run').textContent = runId;

const loss = gw.chart('loss', 'Loss', false);
loss.data.datasets.push(gw.line('train', '#1f77b4'), gw.line('validation', '#ff7f0e', {pointRadius: 2, pointStyle: 'circle'}));
const jac = gw.chart('jaccard', 'Jaccard (IoU)', false);
jac.data.datasets.push(gw.line('train soft', '#1f77b4'), gw.line('train hard', '#9467bd'),
  gw.line('val soft', '#ff7f0e', {pointRadius: 2, pointStyle: 'circle'}),
  gw.line('val hard', '#8c564b', {pointRadius: 2, pointStyle: 'circle'}));
const norm = gw.chart('norm', 'Global gradient norm', true);
norm.data.datasets.push(gw.line('grad norm', '#1f77b4'),
  gw.line('clipping threshold', '#d62728', {borderDash: [6, 3], borderWidth: 2}));
gw.logToggle(loss, 'loss-log');
gw.logToggle(norm, 'norm-log');

// User scalars (the step's 9th field, {name: value}, {} when none): one series each, charted
// once the first arrives.
const scalarColors = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#17becf'];
let scalars = null;
const scalarSeries = {};
function addScalars(step, values) {
  if (!values || typeof values !== 'object' || !Object.keys(values).length) return;
  if (!scalars) {
    document.getElementById('scalars-panel').style.display = 'block';
    scalars = gw.chart('scalars', 'User scalars', false);
  }
  for (const [name, v] of Object.entries(values)) {
    if (!scalarSeries[name]) {
      scalarSeries[name] = gw.line(name, scalarColors[Object.keys(scalarSeries).length % scalarColors.length]);
      scalars.data.datasets.push(scalarSeries[name]);
    }
    scalarSeries[name].data.push({x: step, y: v});
  }
}

// The heat map: one row per layer, one column per range of steps (the mean of log10 norms).
const heat = {layers: [], rows: [], firstLayers: new Set(), lo: 0, hi: 0, columns: 0, binSteps: []};
const viridis = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
function colorOf(t) {
  const x = Math.min(Math.max(t, 0), 1) * (viridis.length - 1), i = Math.min(Math.floor(x), viridis.length - 2);
  return viridis[i].map((c, k) => Math.round(c + (viridis[i + 1][k] - c) * (x - i)));
}
function heatBins(width) {
  const n = heat.rows.length, columns = Math.max(1, Math.min(width, n));
  const layers = heat.layers.length, sums = new Float64Array(columns * layers), counts = new Uint32Array(columns * layers);
  heat.binSteps = [];
  for (let i = 0; i < n; i++) {
    const col = Math.floor(i * columns / n), [step, logs] = heat.rows[i];
    if (heat.binSteps[col] === undefined) heat.binSteps[col] = [step, step];
    heat.binSteps[col][1] = step;
    for (let l = 0; l < layers && l < logs.length; l++) {
      if (isFinite(logs[l])) { sums[col * layers + l] += logs[l]; counts[col * layers + l]++; }
    }
  }
  const means = new Float64Array(columns * layers).fill(NaN);
  let lo = Infinity, hi = -Infinity;
  for (let k = 0; k < means.length; k++) {
    if (counts[k]) { means[k] = sums[k] / counts[k]; lo = Math.min(lo, means[k]); hi = Math.max(hi, means[k]); }
  }
  return {columns, means, lo, hi};
}
function drawHeatmap() {
  const canvas = document.getElementById('heatmap'), layers = heat.layers.length;
  if (!layers || !heat.rows.length) return;
  const labelWidth = 180, barWidth = 70, rowHeight = Math.max(3, Math.min(14, Math.floor(360 / layers)));
  canvas.width = canvas.clientWidth || 1000;
  canvas.height = rowHeight * layers + 24;
  const plotWidth = canvas.width - labelWidth - barWidth;
  const {columns, means, lo, hi} = heatBins(plotWidth);
  Object.assign(heat, {lo, hi, columns, means, geometry: {labelWidth, plotWidth, rowHeight}});
  const image = new ImageData(columns, layers);
  for (let l = 0; l < layers; l++) {
    for (let c = 0; c < columns; c++) {
      const v = means[c * layers + l], rgb = isNaN(v) ? [255, 255, 255] : colorOf(hi > lo ? (v - lo) / (hi - lo) : 0.5);
      image.data.set([...rgb, 255], (l * columns + c) * 4);
    }
  }
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const scratch = document.createElement('canvas');
  scratch.width = columns; scratch.height = layers;
  scratch.getContext('2d').putImageData(image, 0, 0);
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(scratch, labelWidth, 0, plotWidth, rowHeight * layers);
  ctx.font = `${Math.min(11, rowHeight)}px system-ui, sans-serif`;
  ctx.textBaseline = 'middle'; ctx.textAlign = 'right';
  const labelEvery = Math.ceil(11 / rowHeight);
  heat.layers.forEach((name, l) => {
    if (l % labelEvery && !heat.firstLayers.has(name)) return;
    ctx.fillStyle = heat.firstLayers.has(name) ? '#d62728' : '#444';
    ctx.fillText(name.length > 28 ? '…' + name.slice(-27) : name, labelWidth - 4, l * rowHeight + rowHeight / 2);
  });
  ctx.textAlign = 'left'; ctx.fillStyle = '#444'; ctx.textBaseline = 'top';
  const [first] = heat.binSteps[0], [, last] = heat.binSteps[columns - 1];
  ctx.fillText(`step ${first}`, labelWidth, rowHeight * layers + 6);
  ctx.textAlign = 'right';
  ctx.fillText(`step ${last}`, labelWidth + plotWidth, rowHeight * layers + 6);
  drawColorBar(ctx, labelWidth + plotWidth + 8, rowHeight * layers, lo, hi);
}
function drawColorBar(ctx, x, height, lo, hi) {
  for (let y = 0; y < height; y++) {
    ctx.fillStyle = `rgb(${colorOf(1 - y / height).join(',')})`;
    ctx.fillRect(x, y, 12, 1);
  }
  ctx.fillStyle = '#444'; ctx.textAlign = 'left'; ctx.textBaseline = 'middle'; ctx.font = '11px system-ui, sans-serif';
  ctx.fillText(gw.formatNumber(10 ** hi), x + 16, 6);
  ctx.fillText(gw.formatNumber(10 ** lo), x + 16, height - 6);
}
document.getElementById('heatmap').addEventListener('mousemove', ev => {
  const canvas = ev.target, rect = canvas.getBoundingClientRect(), g = heat.geometry;
  if (!g) return;
  const x = (ev.clientX - rect.left) * canvas.width / rect.width, y = (ev.clientY - rect.top) * canvas.height / rect.height;
  const l = Math.floor(y / g.rowHeight), c = Math.floor((x - g.labelWidth) / g.plotWidth * heat.columns);
  document.getElementById('heatmap-hover').textContent = heatCell(c, l);
});
// What the cell of column c, layer l shows on hover: the layer, its steps, and the geometric
// mean of the layer's gradient norms over them; '' outside the map.
function heatCell(c, l) {
  const bin = c >= 0 && c < heat.columns ? heat.binSteps[c] : undefined;
  if (!bin || l < 0 || l >= heat.layers.length) return '';
  const v = heat.means[c * heat.layers.length + l];
  return `${heat.layers[l]}, ` + (bin[0] === bin[1] ? `step ${bin[0]}` : `steps ${bin[0]}–${bin[1]}`) +
    `: grad norm ${isNaN(v) ? 'not reported' : gw.formatNumber(10 ** v)}`;
}

let after = 0, charted = 0;
const lastLoss = {}, lastNorm = {};
function addSteps(d) {
  for (const [step, l, g, lr, js, jh, clip, layerNorms, userScalars] of d.steps) {
    loss.data.datasets[0].data.push({x: step, y: l});
    jac.data.datasets[0].data.push({x: step, y: js}); jac.data.datasets[1].data.push({x: step, y: jh});
    norm.data.datasets[0].data.push({x: step, y: gw.positive(g)});
    norm.data.datasets[1].data.push({x: step, y: gw.positive(clip)});
    if (layerNorms) heat.rows.push([step, layerNorms.map(v => v !== null && v > 0 ? Math.log10(v) : NaN)]);
    addScalars(step, userScalars);
    lastLoss[step] = l; lastNorm[step] = gw.positive(g);
    after = Math.max(after, step); charted++;
  }
  for (const [step, l, js, jh] of d.evals) {
    loss.data.datasets[1].data.push({x: step, y: l});
    jac.data.datasets[2].data.push({x: step, y: js}); jac.data.datasets[3].data.push({x: step, y: jh});
  }
}
function showTimeline(d) {
  const rows = d.events.map(e => ({step: e.step, cls: e.severity, text: `${e.severity} ${e.kind}: ${e.message}` +
      (e.first_layer ? ` (first layer: ${e.first_layer})` : '')}))
    .concat(d.commands.map(c => ({step: c.applied_at_step ?? c.issued_at_step, cls: 'command',
      text: `${c.id} ${c.action} by ${c.issued_by}: ${c.reason}` + (c.applied_at_step ? '' : ' (not acknowledged)')})))
    .sort((a, b) => a.step - b.step);
  document.getElementById('timeline').innerHTML =
    rows.map(r => `<tr class="${r.cls}"><td>${r.step}</td><td>${gw.escapeHtml(r.text)}</td></tr>`).join('');
}
function showRun(d) {
  document.getElementById('state').textContent = d.run.state;
  document.getElementById('mode').textContent = d.run.mode;
  document.getElementById('step').textContent = d.run.last_step;
  document.getElementById('total').textContent = d.run.total_steps ? ' / ' + d.run.total_steps : '';
  document.getElementById('steps-count').textContent = charted;
  document.getElementById('events-count').textContent = d.events.length;
  document.getElementById('commands-count').textContent = d.commands.length;
}
async function poll() {
  let d;
  try { d = await gw.getJson(`/api/v1/runs/${encodeURIComponent(runId)}/steps?layers=1&after=${after}`); }
  catch (e) { document.getElementById('error').textContent = ' (monitor unreachable)'; return; }
  if (d.error) { document.getElementById('error').textContent = ' ' + d.error; return; }
  document.getElementById('error').textContent = '';
  heat.layers = d.run.layer_names || [];
  d.events.forEach(e => e.first_layer && heat.firstLayers.add(e.first_layer));
  const newSteps = d.steps.length;
  addSteps(d);
  const marks = gw.marksOf(d, runId);
  gw.markers(loss, marks); gw.markers(norm, marks);
  showTimeline(d);
  showRun(d);
  loss.update('none'); jac.update('none'); norm.update('none');
  if (scalars) scalars.update('none');
  if (newSteps) drawHeatmap();
  gw.publish({charts: {loss: gw.describe(loss), jaccard: gw.describe(jac), norm: gw.describe(norm),
                       scalars: scalars ? gw.describe(scalars) : null},
              heatmap: {layers: heat.layers.length, steps: heat.rows.length, columns: heat.columns, lo: heat.lo, hi: heat.hi,
                        last_cell: heatCell(heat.columns - 1, 0)}});
}
poll(); setInterval(poll, 1000);
