// Ferroserve's dashboard: polls the control API (status, the latest numbers, series,
// history), draws the tables and the selected endpoint or backend, and starts the charts
// (charts.js) and actions (actions.js). Plain JavaScript, no build step; every string
// from the server goes in as text.
'use strict';

(() => {
  const { $, el, state, api, num, ms, percent, clock, ago, weights, tone, health, showBanner, MAX_POINTS, POLL_MS } =
    window.Ferro;

  // ---- tables -------------------------------------------------------------------------

  /** Rows of the current status for `tab`, each `{ key, sort: {...}, cells: [...] }`. */
  function rowsOf(tab) {
    const status = state.status;
    if (!status) return [];
    const latest = state.latest || {};
    if (tab === 'endpoints') {
      return Object.entries(status.endpoints).map(([name, e]) => {
        const m = (latest.endpoints || {})[name] || {};
        return {
          key: name,
          text: `${name} ${e.route || ''} ${Object.keys(e.traffic).join(' ')}`,
          sort: { name, route: e.route || '', rps: m.rps, p99_ms: m.p99_ms, error_rate: m.error_rate },
          cells: [
            { col: 'name', text: name, cls: 'name' },
            { col: 'route', text: e.route || '(handles only)' },
            { col: 'methods', text: (e.methods || []).join(', ') },
            { col: 'traffic', text: weights(e.traffic) },
            { col: 'shadow', text: weights(e.shadow) || '–' },
            { col: 'rps', text: num(m.rps), cls: 'num' },
            { col: 'p99', text: ms(m.p99_ms), cls: 'num' },
            { col: 'errors', text: percent(m.error_rate), cls: m.error_rate > 0 ? 'num bad' : 'num' },
          ],
        };
      });
    }
    if (tab === 'backends') {
      return Object.entries(status.backends).map(([name, b]) => {
        const m = (latest.backends || {})[name] || {};
        return {
          key: name,
          text: `${name} ${b.status} ${b.message || ''}`,
          sort: { name, status: b.status, rps: m.rps, p99_ms: m.p99_ms, error_rate: m.error_rate, queued: m.queued },
          cells: [
            { col: 'name', text: name, cls: 'name' },
            { col: 'status', text: b.status, pill: tone(b.status) },
            { col: 'replicas', text: `${b.running_replicas}/${b.target_replicas}`, cls: 'num' },
            { col: 'message', text: b.message || '', title: b.message || '', cls: 'message' },
            { col: 'rps', text: num(m.rps), cls: 'num' },
            { col: 'p99', text: ms(m.p99_ms), cls: 'num' },
            { col: 'errors', text: percent(m.error_rate), cls: m.error_rate > 0 ? 'num bad' : 'num' },
            { col: 'queued', text: num(m.queued, 0), cls: 'num' },
          ],
        };
      });
    }
    return Object.entries(status.backends).flatMap(([backend, b]) =>
      b.replicas.map((r) => ({ key: r.id, backend, text: `${r.id} ${r.state}`, sort: { name: r.id, state: r.state },
        cells: replicaCells(r, true) })),
    );
  }

  function replicaCells(r, uptime) {
    const cells = [
      { col: 'id', text: r.id, cls: 'name' },
      { col: 'state', text: r.state, pill: tone(r.state) },
      { col: 'pid', text: r.pid == null ? '–' : String(r.pid), cls: 'num' },
      { col: 'in_flight', text: String(r.in_flight), cls: 'num' },
      { col: 'restarts', text: String(r.restarts), cls: r.restarts > 0 ? 'num warn' : 'num' },
      { col: 'health', text: health(r.last_health_check),
        cls: r.last_health_check && !r.last_health_check.ok ? 'bad' : '' },
    ];
    if (uptime) cells.push({ col: 'up', text: ago(r.started_at_s) });
    cells.push({ col: 'logs', button: 'Logs', replica: r.id });
    return cells;
  }

  /** Puts `rows` in `tbody`, reusing the rows already there (by key) so that scrolling,
   *  focus and selection survive each poll. */
  function fillRows(tbody, rows) {
    const old = new Map([...tbody.children].map((tr) => [tr.dataset.name, tr]));
    rows.forEach((row, i) => {
      let tr = old.get(row.key);
      old.delete(row.key);
      if (!tr) {
        tr = el('tr');
        tr.dataset.name = row.key;
      }
      if (row.backend) tr.dataset.backend = row.backend;
      while (tr.children.length > row.cells.length) tr.lastChild.remove();
      row.cells.forEach((cell, j) => {
        let td = tr.children[j];
        if (!td) td = tr.appendChild(el('td'));
        td.dataset.col = cell.col;
        if (cell.button) {
          const button = td.firstElementChild;
          if (!button || button.dataset.replica !== cell.replica) {
            td.replaceChildren(el('button', { type: 'button', textContent: cell.button, className: 'small' }));
            td.firstElementChild.dataset.replica = cell.replica;
          }
          return;
        }
        if (cell.pill) {
          const pill = td.firstElementChild;
          if (!pill || pill.textContent !== cell.text) {
            td.replaceChildren(el('span', { className: `pill ${cell.pill}`, textContent: cell.text }));
          }
        } else if (cell.marks) {
          // The text, then a pill for each `[text, tone]` mark.
          const shown = JSON.stringify([cell.text, cell.marks]);
          if (td.dataset.shown !== shown) {
            td.dataset.shown = shown;
            td.replaceChildren(cell.text, ...cell.marks.map(([text, tone]) => mark(text, tone)));
          }
        } else if (td.textContent !== cell.text) td.textContent = cell.text;
        if (!cell.marks) delete td.dataset.shown;
        const cls = cell.cls || '';
        if (td.className !== cls) td.className = cls;
        if (cell.title !== undefined && td.title !== cell.title) td.title = cell.title;
      });
      if (tbody.children[i] !== tr) tbody.insertBefore(tr, tbody.children[i] || null);
    });
    for (const tr of old.values()) tr.remove();
  }

  /** A pill after a text: `leader`, `this node`. */
  const mark = (text, tone = '') => el('span', { className: `pill mark ${tone}`, textContent: text });

  function renderTables() {
    const status = state.status;
    if (!status) return;
    const filter = state.filter.toLowerCase();
    for (const tab of ['endpoints', 'backends', 'replicas']) {
      const all = rowsOf(tab);
      const shown = filter ? all.filter((row) => row.text.toLowerCase().includes(filter)) : all;
      const [key, dir] = state.sort[tab];
      shown.sort((a, b) => {
        const x = a.sort[key];
        const y = b.sort[key];
        if (x === y) return a.key < b.key ? -1 : 1;
        if (x == null) return 1;
        if (y == null) return -1;
        return (x < y ? -1 : 1) * dir;
      });
      fillRows($(`#${tab} tbody`), shown);
      $(`#count-${tab}`).textContent = shown.length === all.length ? `${all.length}` : `${shown.length}/${all.length}`;
      for (const th of document.querySelectorAll(`#${tab} th[data-sort]`)) {
        th.dataset.dir = th.dataset.sort === key ? (dir > 0 ? 'asc' : 'desc') : '';
      }
    }
    const selected = state.selected;
    for (const tr of document.querySelectorAll('#endpoints tbody tr, #backends tbody tr')) {
      const kind = tr.closest('table').id === 'endpoints' ? 'endpoint' : 'backend';
      tr.classList.toggle('selected', !!selected && selected.kind === kind && selected.name === tr.dataset.name);
    }
    $('#app-status').textContent = status.status;
    $('#app-status').className = `badge ${tone(status.status)}`;
    $('#app-ready').textContent = status.ready ? 'ready' : 'not ready';
    $('#app-ready').className = `badge ${status.ready ? 'ok' : 'bad'}`;
    $('#not-ready').textContent = (status.not_ready || []).join('; ');
    $('#not-ready').hidden = !(status.not_ready || []).length;
    $('#updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.title = `Ferroserve · ${status.status}`;
  }

  // ---- the cluster (cluster mode only) ------------------------------------------------

  const GIB = 1024 ** 3;
  /** A count of CPUs or GPUs: `2`, `0.5`. */
  const amount = (v) => (v == null ? '–' : String(Math.round(v * 10) / 10));
  const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

  /** The Cluster panel: shown only when the status has a `cluster` section (a node
   *  started with `--cluster`); this node, the leader, the app revisions and the nodes. */
  function renderCluster() {
    const cluster = state.status && state.status.cluster;
    $('#cluster-box').hidden = !cluster;
    if (!cluster) return;
    const nodes = cluster.nodes || {};
    const placement = cluster.placement || {};
    const placed = placement.backends || {};
    const leader = cluster.leader
      ? cluster.is_leader ? `${cluster.leader} (this node)` : cluster.leader
      : 'none elected';
    $('#cluster-summary').textContent =
      `node ${cluster.node} · leader ${leader} · ${plural(Object.keys(nodes).length, 'node')}`;

    const applied = cluster.applied_revision;
    const current = cluster.app_revision;
    const revisions = `applied ${applied ?? '–'} of ${current ?? '–'}`;
    const facts = [
      ['node', cluster.node],
      ['leader', cluster.leader || mark('none elected', 'bad'), cluster.is_leader ? mark('this node', 'ok') : ''],
      ['registered', cluster.registered ? 'yes' : mark('no: this node holds no lease', 'bad')],
      ['app revision',
        cluster.apply_error ? mark(revisions, 'bad') : applied === current ? revisions : mark(revisions, 'warn')],
      ['placement', placement.app_revision == null ? 'none yet'
        : placement.app_revision === current
          ? `revision ${placement.app_revision} by ${placement.leader}`
          : mark(`revision ${placement.app_revision} by ${placement.leader}`, 'warn')],
      ['etcd revision', String(cluster.etcd_revision ?? '–')],
    ];
    $('#cluster-facts').replaceChildren(
      ...facts.map(([key, ...values]) => {
        const dd = el('dd', {}, ...values);
        dd.dataset.fact = key;
        return el('div', {}, el('dt', { textContent: key }), dd);
      }),
    );
    $('#cluster-apply-error').textContent = cluster.apply_error
      ? `This node could not apply revision ${applied ?? '–'}: ${cluster.apply_error}` : '';
    $('#cluster-apply-error').hidden = !cluster.apply_error;
    const unplaced = Object.entries(placement.unplaced || {}).filter(([, n]) => n > 0);
    $('#cluster-unplaced').textContent = unplaced.length
      ? `No node has room for ${unplaced.map(([b, n]) => `${plural(n, 'replica')} of ${b}`).join(', ')}: ` +
        'add a node, or lower its num_cpus, num_gpus, memory or max_replicas_per_node.'
      : '';
    $('#cluster-unplaced').hidden = !unplaced.length;

    const rows = Object.entries(nodes).map(([name, node]) => {
      // Per backend: the replicas it runs, and those placed on it when they differ.
      const running = node.replicas || {};
      const backends = [...new Set([...Object.keys(running), ...Object.keys(placed)])].sort();
      let behind = false;
      const counts = backends.flatMap((backend) => {
        const have = (running[backend] || []).length;
        const want = (placed[backend] || {})[name] || 0;
        if (!have && !want) return [];
        if (have !== want) behind = true;
        return [have === want ? `${backend} ${have}` : `${backend} ${have}/${want}`];
      });
      const marks = [];
      if (name === cluster.leader) marks.push(['leader', 'ok']);
      if (name === cluster.node) marks.push(['this node', '']);
      return {
        key: name,
        cells: [
          { col: 'name', text: name, cls: 'name', marks },
          { col: 'proxy', text: node.proxy || '–' },
          { col: 'cpus', text: amount(node.cpus), cls: 'num' },
          { col: 'memory', text: node.memory_bytes == null ? '–' : (node.memory_bytes / GIB).toFixed(1), cls: 'num' },
          { col: 'gpus', text: amount(node.gpus), cls: 'num' },
          { col: 'replicas', text: counts.join(' · ') || '–', cls: behind ? 'warn' : '',
            title: backends.flatMap((backend) => running[backend] || []).join(', ') },
        ],
      };
    });
    const tbody = $('#cluster-nodes tbody');
    fillRows(tbody, rows);
    for (const tr of tbody.children) tr.classList.toggle('leader', tr.dataset.name === cluster.leader);
  }

  function showTab(tab) {
    state.tab = tab;
    for (const button of document.querySelectorAll('#tabs [data-tab]')) {
      button.setAttribute('aria-selected', String(button.dataset.tab === tab));
    }
    for (const panel of document.querySelectorAll('[data-panel]')) panel.hidden = panel.dataset.panel !== tab;
  }

  $('#tabs').addEventListener('click', (event) => {
    const button = event.target.closest('[data-tab]');
    if (button) showTab(button.dataset.tab);
  });
  $('#filter').addEventListener('input', (event) => {
    state.filter = event.target.value.trim();
    renderTables();
  });
  for (const th of document.querySelectorAll('th[data-sort]')) {
    th.addEventListener('click', () => {
      const tab = th.closest('table').id;
      const [key, dir] = state.sort[tab];
      const numeric = !['name', 'route', 'status', 'state'].includes(th.dataset.sort);
      state.sort[tab] = [th.dataset.sort, key === th.dataset.sort ? -dir : numeric ? -1 : 1];
      renderTables();
    });
  }
  for (const id of ['endpoints', 'backends', 'replicas']) {
    $(`#${id} tbody`).addEventListener('click', (event) => {
      const button = event.target.closest('button[data-replica]');
      if (button) return window.Ferro.openLogs(button.dataset.replica);
      const tr = event.target.closest('tr');
      if (!tr) return;
      if (id === 'replicas') select('backend', tr.dataset.backend);
      else select(id === 'endpoints' ? 'endpoint' : 'backend', tr.dataset.name);
    });
  }
  $('#selected-replicas tbody').addEventListener('click', (event) => {
    const button = event.target.closest('button[data-replica]');
    if (button) window.Ferro.openLogs(button.dataset.replica);
  });

  // ---- polling ------------------------------------------------------------------------

  let timer = 0;
  let polling = false;
  let again = false;

  /** One round: status, the latest numbers, the selected series, now and then history. */
  async function poll() {
    clearTimeout(timer);
    if (polling) {
      again = true;
      return;
    }
    polling = true;
    try {
      await refreshStatus();
      if (state.status && !state.seeded && Object.keys(state.status.endpoints).length) {
        state.seeded = true;
        await window.FerroCharts.seedOverall(state);
      }
      const now = Date.now();
      if (now >= state.latestRetryAt) await refreshLatest();
      if (state.selected && now >= state.seriesRetryAt) await window.FerroCharts.appendSeries(state);
      if (now >= state.historyAt) await refreshHistory();
    } finally {
      polling = false;
      timer = setTimeout(poll, again ? 0 : document.hidden ? 5 * POLL_MS : POLL_MS);
      again = false;
    }
  }

  async function refreshStatus() {
    try {
      state.status = await api('GET', '/api/status');
      showBanner('');
      renderTables();
      renderSelected();
      renderCluster();
      document.body.dataset.loaded = 'yes';
    } catch (e) {
      if (e.status !== 401) showBanner(`Cannot read the status: ${e.message}`);
    }
  }

  async function refreshLatest() {
    try {
      state.latest = await api('GET', '/api/series/latest');
      window.FerroCharts.addOverall(state);
    } catch (e) {
      state.latest = null;
      state.latestRetryAt = Date.now() + 10000;
    }
  }

  async function refreshHistory() {
    state.historyAt = Date.now() + 3000;
    const list = $('#history');
    try {
      const { changes } = await api('GET', '/api/history');
      list.replaceChildren(
        ...(changes || []).slice(0, 100).map((c) =>
          el('li', {}, el('time', { textContent: clock(c.at_s), title: new Date(c.at_s * 1000).toString() }), ` ${c.what}`),
        ),
      );
      if (!list.children.length) list.replaceChildren(el('li', { className: 'muted', textContent: 'No change yet.' }));
    } catch (e) {
      state.historyAt = Date.now() + 15000;
      if (e.status !== 401) list.replaceChildren(el('li', { className: 'muted', textContent: `No history: ${e.message}` }));
    }
  }

  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) poll();
  });

  // ---- the selected endpoint or backend -----------------------------------------------

  function select(kind, name) {
    if (!name) return;
    const same = state.selected && state.selected.kind === kind && state.selected.name === name;
    if (same) return;
    state.selected = { kind, name };
    state.generation += 1;
    state.series = null;
    state.seriesRetryAt = 0;
    $('#traffic-form').dataset.dirty = '';
    $('#scale-form').dataset.dirty = '';
    $('#traffic-rows').replaceChildren();
    window.FerroCharts.clearSelected(state);
    renderTables();
    renderSelected();
    window.FerroCharts.appendSeries(state);
  }

  function renderSelected() {
    const selected = state.selected;
    const status = state.status;
    const item = selected && status && status[`${selected.kind}s`][selected.name];
    $('#nothing-selected').hidden = !!item;
    $('#selected-body').hidden = !item;
    if (!item) {
      if (selected) $('#nothing-selected').textContent = `The ${selected.kind} \`${selected.name}\` is gone.`;
      return;
    }
    $('#selected-title').textContent = `${selected.kind === 'endpoint' ? 'Endpoint' : 'Backend'} ${selected.name}`;
    const info = $('#selected-info');
    const facts =
      selected.kind === 'endpoint'
        ? [['route', item.route || '(handles only)'], ['methods', item.methods.join(', ')],
          ['traffic', weights(item.traffic)], ['shadow', weights(item.shadow) || '–']]
        : [['status', item.status], ['replicas', `${item.running_replicas} running of ${item.target_replicas}`],
          ['version', item.version || '–'], ['message', item.message || '–']];
    info.replaceChildren(el('dl', {}, ...facts.flatMap(([k, v]) => [el('dt', { textContent: k }), el('dd', { textContent: v })])));
    $('#traffic-form').hidden = selected.kind !== 'endpoint';
    $('#scale-form').hidden = selected.kind !== 'backend';
    $('#selected-replicas').hidden = selected.kind !== 'backend';
    if (selected.kind === 'endpoint') window.Ferro.renderTrafficForm(item.traffic);
    else {
      if (!$('#scale-form').dataset.dirty) $('#scale-input').value = item.target_replicas;
      fillRows($('#selected-replicas tbody'), item.replicas.map((r) => ({ key: r.id, cells: replicaCells(r, false) })));
    }
  }

  /** Takes a status that an action answered with, at once, and polls again. */
  function adopt(status) {
    if (status && status.backends && status.endpoints) {
      state.status = status;
      renderTables();
      renderSelected();
      renderCluster();
    }
    state.historyAt = 0;
    poll();
  }

  // ---- start --------------------------------------------------------------------------

  Object.assign(window.Ferro, { poll, select, showTab, adopt });
  window.FerroCharts.setup(state, api, MAX_POINTS);
  poll();
})();
