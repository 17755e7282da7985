// The dashboard's uPlot charts: the overall one (summed from /api/series/latest while the
// page is open) and the four of the selected endpoint or backend (/api/series: the whole
// 15-minute window once, then the points after the last one). Each chart's container
// carries the number of points it draws in `data-points`.
'use strict';

(() => {
  const HEIGHT = 130;
  const WINDOW_S = 300;
  /** The most endpoints and backends whose series are fetched to fill the overall chart. */
  const SEED_AT_MOST = 40;
  const COLORS = { rps: '#2563eb', p50: '#16a34a', p90: '#d97706', p99: '#dc2626', errors: '#dc2626', queued: '#7c3aed' };
  const charts = {};
  let api = null;
  let maxPoints = 900;
  let inFlight = -1;

  const fixed = (digits) => (v) => (v == null ? '–' : Number(v).toFixed(v >= 100 ? 0 : digits));
  /** The decimals that tell ticks apart: 0.005 apart needs 3. */
  const decimals = (ticks) => {
    const step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) : 1;
    return step > 0 ? Math.min(4, Math.max(0, Math.ceil(-Math.log10(step) - 1e-9))) : 1;
  };
  const fromZero = (u, min, max) => [0, max > 0 ? max * 1.15 : 1];
  /** Time ticks as `HH:MM`, or `HH:MM:SS` when they are less than a minute apart. */
  const clockTick = (ticks) => {
    const seconds = ticks.length > 1 && ticks[1] - ticks[0] < 60;
    const format = { hour: '2-digit', minute: '2-digit', hourCycle: 'h23', ...(seconds ? { second: '2-digit' } : {}) };
    return (t) => new Date(t * 1000).toLocaleTimeString([], format);
  };
  /** Tick steps of an axis that counts (queued requests): whole numbers only. */
  const WHOLE = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000];

  /** A uPlot in the element `id`, with a time axis and `lines` on one or two y scales. */
  function make(id, lines) {
    const target = document.getElementById(id);
    // At least the last 5 minutes along x, so that a few points do not spread over it all.
    const recent = (u, min, max) => (max == null ? [Date.now() / 1000 - WINDOW_S, Date.now() / 1000]
      : [Math.min(min, max - WINDOW_S), max]);
    const scales = { x: { time: true, range: recent }, y: { range: fromZero } };
    const axis = (whole) => (whole ? { incrs: WHOLE, values: (u, ticks) => ticks.map(fixed(0)) }
      : { values: (u, ticks) => ticks.map(fixed(decimals(ticks))) });
    const axes = [
      { size: 28, space: 60, values: (u, ticks) => ticks.map(clockTick(ticks)) },
      { size: 48, ...axis(lines.every((line) => line.digits === 0)) },
    ];
    if (lines.some((line) => line.scale === 'y2')) {
      scales.y2 = { range: fromZero };
      axes.push({ scale: 'y2', side: 1, size: 40, grid: { show: false }, ...axis(true) });
    }
    const options = {
      width: Math.max(200, target.clientWidth),
      height: HEIGHT,
      scales,
      axes,
      cursor: { drag: { x: false, y: false } },
      series: [
        { value: (u, v) => (v == null ? '–' : new Date(v * 1000).toLocaleTimeString()) },
        ...lines.map((line) => ({
          label: line.label,
          stroke: line.color,
          width: 1.5,
          scale: line.scale || 'y',
          spanGaps: false,
          points: { show: false },
          value: (u, v) => (v != null && v < 1 && line.digits !== 0 ? Number(v).toFixed(3) : fixed(line.digits ?? 1)(v)),
        })),
      ],
    };
    const chart = new uPlot(options, [[], ...lines.map(() => [])], target);
    new ResizeObserver(() => {
      const width = Math.max(200, target.clientWidth);
      if (width !== chart.width) chart.setSize({ width, height: HEIGHT });
    }).observe(target);
    charts[id] = { chart, target };
  }

  /** Draws `columns` (the x values first) in chart `id`. */
  function draw(id, columns) {
    const { chart, target } = charts[id];
    chart.setData(columns);
    target.dataset.points = String(columns[0].length);
  }

  function setup(state, apiFn, max) {
    api = apiFn;
    maxPoints = max;
    make('chart-overall', [
      { label: 'requests/s', color: COLORS.rps },
      { label: 'errors/s', color: COLORS.errors },
      { label: 'queued', color: COLORS.queued, scale: 'y2', digits: 0 },
    ]);
    make('chart-rps', [{ label: 'requests/s', color: COLORS.rps }]);
    make('chart-latency', [
      { label: 'p50', color: COLORS.p50 },
      { label: 'p90', color: COLORS.p90 },
      { label: 'p99', color: COLORS.p99 },
    ]);
    make('chart-errors', [{ label: 'errors %', color: COLORS.errors, digits: 2 }]);
    make('chart-queued', [{ label: 'queued', color: COLORS.queued, digits: 0 }]);
  }

  function drawSelected(series) {
    const t = series.t;
    draw('chart-rps', [t, series.rps]);
    draw('chart-latency', [t, series.p50_ms, series.p90_ms, series.p99_ms]);
    draw('chart-errors', [t, series.error_rate.map((v) => (v == null ? null : v * 100))]);
    draw('chart-queued', [t, series.queued]);
  }

  const KEYS = ['t', 'rps', 'error_rate', 'p50_ms', 'p90_ms', 'p99_ms', 'queued'];

  function clearSelected(state) {
    drawSelected(Object.fromEntries(KEYS.map((k) => [k, []])));
    document.getElementById('series-note').textContent = '';
    inFlight = -1;
    state.series = null;
  }

  /** Fetches the selected item's points: the whole window the first time, then the new
   *  ones; keeps the last `maxPoints`. */
  async function appendSeries(state) {
    const selected = state.selected;
    const generation = state.generation;
    if (!selected || inFlight === generation) return;
    inFlight = generation;
    const had = state.series;
    const last = had && had.t.length ? had.t[had.t.length - 1] : null;
    const path = `/api/series?${selected.kind}=${encodeURIComponent(selected.name)}${last == null ? '' : `&since=${last}`}`;
    const note = document.getElementById('series-note');
    try {
      const answer = await api('GET', path);
      if (generation !== state.generation) return;
      const series = had || Object.fromEntries(KEYS.map((k) => [k, []]));
      const t = (answer && answer.t) || [];
      t.forEach((at, i) => {
        if (series.t.length && at <= series.t[series.t.length - 1]) return;
        for (const key of KEYS) series[key].push(key === 't' ? at : (answer[key] || [])[i] ?? null);
      });
      const extra = series.t.length - maxPoints;
      if (extra > 0) for (const key of KEYS) series[key].splice(0, extra);
      state.series = series;
      drawSelected(series);
      note.textContent = series.t.length ? '' : 'No points yet.';
    } catch (e) {
      if (generation !== state.generation) return;
      state.seriesRetryAt = Date.now() + 5000;
      if (e.status !== 401) note.textContent = `No charts: ${e.message}`;
    } finally {
      if (inFlight === generation) inFlight = -1;
    }
  }

  /** Adds one point to the overall chart from `state.latest`: requests/s and errors/s
   *  summed over endpoints, queued summed over backends. */
  function addOverall(state) {
    const latest = state.latest;
    const overall = state.overall;
    if (!latest || typeof latest.t !== 'number') return;
    if (overall.t.length && latest.t <= overall.t[overall.t.length - 1]) return;
    let rps = 0;
    let errors = 0;
    let queued = 0;
    for (const m of Object.values(latest.endpoints || {})) {
      rps += m.rps || 0;
      errors += (m.rps || 0) * (m.error_rate || 0);
    }
    for (const m of Object.values(latest.backends || {})) queued += m.queued || 0;
    overall.t.push(latest.t);
    overall.rps.push(rps);
    overall.errors.push(errors);
    overall.queued.push(queued);
    const extra = overall.t.length - maxPoints;
    if (extra > 0) for (const key of Object.keys(overall)) overall[key].splice(0, extra);
    draw('chart-overall', [overall.t, overall.rps, overall.errors, overall.queued]);
  }

  /** Fills the overall chart with the server's last 15 minutes when there are few enough
   *  endpoints and backends to fetch each one's series (else it starts when the page opens). */
  async function seedOverall(state) {
    const status = state.status;
    const endpoints = Object.keys(status.endpoints);
    const backends = Object.keys(status.backends);
    if (endpoints.length + backends.length > SEED_AT_MOST) return;
    const fetchAll = (kind, names) =>
      Promise.all(names.map((name) => api('GET', `/api/series?${kind}=${encodeURIComponent(name)}`).catch(() => null)));
    const [bySeries, byBackend] = await Promise.all([fetchAll('endpoint', endpoints), fetchAll('backend', backends)]);
    const sums = new Map();
    const at = (t) => sums.get(t) || sums.set(t, { rps: 0, errors: 0, queued: 0 }).get(t);
    for (const series of bySeries.filter(Boolean)) {
      (series.t || []).forEach((t, i) => {
        const rps = series.rps[i] || 0;
        at(t).rps += rps;
        at(t).errors += rps * (series.error_rate[i] || 0);
      });
    }
    for (const series of byBackend.filter(Boolean)) {
      (series.t || []).forEach((t, i) => (at(t).queued += series.queued[i] || 0));
    }
    const overall = state.overall;
    const first = overall.t.length ? overall.t[0] : Infinity;
    const earlier = [...sums.keys()].filter((t) => t < first).sort((a, b) => a - b).slice(-maxPoints);
    overall.t.unshift(...earlier);
    overall.rps.unshift(...earlier.map((t) => sums.get(t).rps));
    overall.errors.unshift(...earlier.map((t) => sums.get(t).errors));
    overall.queued.unshift(...earlier.map((t) => sums.get(t).queued));
    draw('chart-overall', [overall.t, overall.rps, overall.errors, overall.queued]);
  }

  window.FerroCharts = { setup, clearSelected, appendSeries, addOverall, seedOverall };
})();
