// What the live pages share: requests with the page's token, Chart.js charts with a log axis
// whose ticks stay readable over many decades, zoom, event and command markers, and the page
// state the e2e tests read (#page-state). Needs Chart.js 3 and the zoom and annotation plugins.
'use strict';

const gw = (() => {
  // A monitor with tokens: the page's own ?token= goes along with every request.
  const token = new URLSearchParams(location.search).get('token');
  const withToken = path => token ? path + (path.includes('?') ? '&' : '?') + 'token=' + encodeURIComponent(token) : path;
  const escapeHtml = s => String(s).replace(/[&<>"']/g, c => `&#${c.charCodeAt(0)};`);

  // 1e-21, 3.2e+5 -> "3.2e5", 0.25, 12.5: at most 3 significant digits, exponent form outside 1e-3..1e5.
  function formatNumber(v) {
    if (v === null || v === undefined || !isFinite(v)) return '–';
    if (v === 0) return '0';
    const a = Math.abs(v);
    if (a < 1e-3 || a >= 1e5) {
      const [mantissa, exponent] = v.toExponential(2).split('e');
      return `${Number(mantissa)}e${Number(exponent)}`;
    }
    return String(Number(v.toPrecision(3)));
  }

  // A log axis labels powers of ten only, every k-th so that at most ~8 show: "1e-21", not
  // "0.000000000000000000001". Under two decades it labels every tick Chart.js makes.
  function logTick(value, index, ticks) {
    const lo = Math.log10(ticks[0].value), hi = Math.log10(ticks[ticks.length - 1].value);
    if (!(hi - lo >= 2)) return formatNumber(value);
    const exponent = Math.round(Math.log10(value));
    if (Math.abs(Math.log10(value) - exponent) > 1e-6) return null;
    const every = Math.max(1, Math.ceil((hi - lo) / 8));
    if (exponent % every !== 0) return null;
    return exponent >= -2 && exponent <= 2 ? String(Number((10 ** exponent).toPrecision(1))) : `1e${exponent}`;
  }

  const yScale = log => log ?
    {type: 'logarithmic', ticks: {callback: logTick, autoSkip: false}} :
    {type: 'linear', ticks: {callback: v => formatNumber(v)}};

  // A line dataset; the legend draws it as a line with its dash, not a filled box.
  const line = (label, color, extra) => Object.assign({label, data: [], borderColor: color, backgroundColor: color,
    pointRadius: 0, pointHoverRadius: 3, borderWidth: 1.5, spanGaps: true, pointStyle: 'line'}, extra || {});

  // Legend entries drawn as short lines with their dataset's dash, whatever its point style.
  const lineLabels = c => Chart.defaults.plugins.legend.labels.generateLabels(c)
    .map(item => Object.assign(item, {pointStyle: 'line', lineDash: c.data.datasets[item.datasetIndex].borderDash || []}));

  function chart(canvasId, title, log) {
    const c = new Chart(document.getElementById(canvasId), {type: 'line', data: {datasets: []}, options: {
      animation: false, parsing: false, normalized: true, maintainAspectRatio: false,
      interaction: {mode: 'nearest', axis: 'x', intersect: false},
      scales: {x: {type: 'linear', title: {display: true, text: 'step'}}, y: yScale(log)},
      plugins: {
        title: {display: true, text: title},
        legend: {labels: {usePointStyle: true, pointStyleWidth: 30, boxHeight: 8, font: {size: 12}, generateLabels: lineLabels}},
        tooltip: {callbacks: {label: item => `${item.dataset.label}: ${formatNumber(item.parsed.y)}`}},
        zoom: {zoom: {drag: {enabled: true}, wheel: {enabled: true, modifierKey: 'ctrl'}, pinch: {enabled: true}, mode: 'x'},
               pan: {enabled: true, mode: 'x', modifierKey: 'shift'}},
        annotation: {annotations: {}}}}});
    c.canvas.addEventListener('dblclick', () => c.resetZoom());
    return c;
  }

  // The checkbox `boxId` switches the chart's y axis between linear and log.
  function logToggle(c, boxId) {
    const box = document.getElementById(boxId);
    box.addEventListener('change', () => {
      c.resetZoom();
      c.options.scales.y = yScale(box.checked);
      c.update('none');
    });
  }

  // Vertical lines at events and commands (at most the last 100), each kind labelled at its
  // first line, the labels stepped down so that neighbours do not overprint.
  // marks: [{step, label, key (what counts as the same kind), color, dashed}].
  function markers(c, marks) {
    const labelled = new Set(), annotations = {};
    marks.slice(-100).forEach((m, i) => {
      const first = !labelled.has(m.key);
      labelled.add(m.key);
      annotations['m' + i] = {type: 'line', xMin: m.step, xMax: m.step, borderColor: m.color, borderWidth: 1,
        borderDash: m.dashed ? [4, 3] : [],
        label: {display: first, content: m.label, position: 'start', yAdjust: -15 * ((labelled.size - 1) % 6),
                color: m.color, font: {size: 11}, backgroundColor: 'rgba(255,255,255,0.9)', padding: 2}};
    });
    c.options.plugins.annotation.annotations = annotations;
  }

  const eventColor = e => e.severity === 'critical' ? '#d62728' : '#e6a000';
  // An API reply's events and commands as markers; on a compare page `run` names the run and
  // `color` is its colour.
  const marksOf = (d, run, color) =>
    d.events.map(e => ({step: e.step, label: e.kind, key: run + ' ' + e.kind, color: color || eventColor(e)}))
      .concat(d.commands.map(c => ({step: c.applied_at_step ?? c.issued_at_step, label: c.action,
                                    key: run + ' ' + c.action, color: color || '#1f77b4', dashed: true})))
      .sort((a, b) => a.step - b.step);

  // What the charts show, for the e2e tests: datasets with their point counts, the y axis type
  // and its visible tick labels.
  function describe(c) {
    return {y: c.options.scales.y.type, ticks: (c.scales.y ? c.scales.y.ticks : []).map(t => t.label)
              .filter(l => l !== null && l !== undefined && l !== ''),
            datasets: c.data.datasets.map(d => ({label: d.label, points: d.data.filter(p => p.y !== null).length})),
            annotations: Object.keys(c.options.plugins.annotation.annotations).length};
  }
  function publish(state) { document.getElementById('page-state').textContent = JSON.stringify(state); }

  async function getJson(path) {
    const reply = await fetch(withToken(path));
    return reply.json();
  }

  const positive = v => v !== null && v > 0 ? v : null;
  return {withToken, escapeHtml, formatNumber, logTick, line, chart, logToggle, markers, marksOf, describe, publish,
          getJson, positive};
})();
