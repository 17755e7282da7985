// The dashboard's actions, each through the control API after a confirmation: traffic
// weights (checked and normalised here), scaling a backend, applying an app file; and a
// replica's recent log lines.
'use strict';

(() => {
  const { $, el, state, api, weights, clock, confirmAction, showResult } = window.Ferro;

  function trafficRow(backend, weight) {
    const input = el('input', { type: 'number', min: '0', step: 'any', value: String(weight), required: true });
    input.dataset.backend = backend;
    input.setAttribute('aria-label', `weight of ${backend}`);
    const remove = el('button', { type: 'button', textContent: '×', title: `remove ${backend}`, className: 'small' });
    remove.addEventListener('click', () => {
      row.remove();
      $('#traffic-form').dataset.dirty = 'yes';
      previewTraffic();
    });
    const row = el('span', { className: 'row traffic-row' }, el('label', { textContent: backend }), input, remove);
    return row;
  }

  function renderTrafficForm(traffic) {
    const form = $('#traffic-form');
    if (!form.dataset.dirty) {
      $('#traffic-rows').replaceChildren(...Object.entries(traffic).map(([b, w]) => trafficRow(b, w)));
    }
    const present = new Set([...form.querySelectorAll('input[data-backend]')].map((i) => i.dataset.backend));
    const others = Object.keys(state.status.backends).filter((b) => !present.has(b));
    const select = $('#traffic-add');
    const wanted = others.join('\n');
    if (select.dataset.options !== wanted) {
      select.dataset.options = wanted;
      select.replaceChildren(...others.map((b) => el('option', { value: b, textContent: b })));
    }
    select.disabled = $('#traffic-add-button').disabled = !others.length;
    previewTraffic();
  }

  /** The weights in the form, normalised to sum to 1, or the reason they cannot be. */
  function formWeights() {
    const entries = [...document.querySelectorAll('#traffic-rows input[data-backend]')].map((input) => [
      input.dataset.backend,
      input.value.trim() === '' ? NaN : Number(input.value),
    ]);
    if (!entries.length) return { error: 'Name at least one backend.' };
    const bad = entries.find(([, w]) => !Number.isFinite(w) || w < 0);
    if (bad) return { error: `The weight of ${bad[0]} must be a number ≥ 0.` };
    const sum = entries.reduce((total, [, w]) => total + w, 0);
    if (!(sum > 0)) return { error: 'The weights must sum to more than 0.' };
    return { weights: Object.fromEntries(entries.map(([b, w]) => [b, w / sum])) };
  }

  function previewTraffic() {
    const { weights: normalised, error } = formWeights();
    const preview = $('#traffic-preview');
    preview.textContent = error || `Sends: ${weights(normalised)}`;
    preview.className = error ? 'small error' : 'small muted';
    $('#traffic-apply').disabled = !!error;
  }

  $('#traffic-form').addEventListener('input', () => {
    $('#traffic-form').dataset.dirty = 'yes';
    previewTraffic();
  });
  $('#traffic-add-button').addEventListener('click', () => {
    const backend = $('#traffic-add').value;
    if (!backend) return;
    $('#traffic-form').dataset.dirty = 'yes';
    $('#traffic-rows').append(trafficRow(backend, 0));
    renderTrafficForm({});
  });

  $('#traffic-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = state.selected && state.selected.name;
    const { weights: normalised, error } = formWeights();
    if (!name || error) return;
    const before = (state.status.endpoints[name] || {}).traffic || {};
    const ok = await confirmAction(
      `Change the traffic of ${name}?`,
      `From ${weights(before) || 'nothing'}\nto ${weights(normalised)}.`,
    );
    if (!ok) return;
    try {
      const status = await api('PUT', `/api/endpoints/${encodeURIComponent(name)}/traffic`, normalised);
      $('#traffic-form').dataset.dirty = '';
      window.Ferro.adopt(status);
      const now = status && status.endpoints && status.endpoints[name];
      showResult(true, `Traffic of ${name} is now ${now ? weights(now.traffic) : weights(normalised)}.`);
    } catch (e) {
      showResult(false, `The traffic of ${name} was not changed: ${e.message}`);
    }
  });

  $('#scale-form').addEventListener('input', () => ($('#scale-form').dataset.dirty = 'yes'));
  $('#scale-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const name = state.selected && state.selected.name;
    const wanted = Number($('#scale-input').value);
    if (!name) return;
    if (!Number.isInteger(wanted) || wanted < 0) {
      showResult(false, 'The number of replicas must be a whole number ≥ 0.');
      return;
    }
    const before = (state.status.backends[name] || {}).target_replicas;
    const ok = await confirmAction(`Scale ${name}?`, `From ${before} to ${wanted} replicas.`);
    if (!ok) return;
    try {
      const status = await api('PUT', `/api/backends/${encodeURIComponent(name)}/replicas`, { num_replicas: wanted });
      $('#scale-form').dataset.dirty = '';
      window.Ferro.adopt(status);
      const b = status && status.backends && status.backends[name];
      showResult(true, b ? `Backend ${name}: ${b.status}, ${b.running_replicas} of ${b.target_replicas} replicas running.`
        : `Backend ${name} scaled to ${wanted}.`);
    } catch (e) {
      showResult(false, `Backend ${name} was not scaled: ${e.message}`);
    }
  });

  // Apply an app file.
  $('#open-apply').addEventListener('click', () => {
    $('#apply-error').hidden = true;
    $('#apply').showModal();
  });
  $('#apply-cancel').addEventListener('click', () => $('#apply').close());
  $('#apply-file').addEventListener('change', async (event) => {
    const file = event.target.files[0];
    if (file) $('#apply-text').value = await file.text();
  });
  $('#apply-current').addEventListener('click', async () => {
    try {
      $('#apply-text').value = JSON.stringify(await api('GET', '/api/app'), null, 2);
    } catch (e) {
      $('#apply-error').textContent = `Cannot read the running app: ${e.message}`;
      $('#apply-error').hidden = false;
    }
  });
  $('#apply-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const text = $('#apply-text').value;
    const problem = $('#apply-error');
    problem.hidden = true;
    if (!text.trim()) {
      problem.textContent = 'The app file is empty.';
      problem.hidden = false;
      return;
    }
    const ok = await confirmAction('Apply this app?', 'What runs becomes this file: backends and endpoints not in it are removed.');
    if (!ok) return;
    try {
      const answer = await api('PUT', '/api/app', text);
      $('#apply').close();
      showResult(true, `Deploying ${answer.backends} backends and ${answer.endpoints} endpoints: the tables show the progress.`);
      window.Ferro.adopt(null);
    } catch (e) {
      const { key, line } = e.body || {};
      const where = [key && !e.message.includes(key) && `key ${key}`, line && !e.message.includes(`line ${line}`) && `line ${line}`]
        .filter(Boolean)
        .join(', ');
      problem.textContent = `Refused${where ? ` (${where})` : ''}: ${e.message}`;
      problem.hidden = false;
      if (line > 0) selectLine($('#apply-text'), line);
    }
  });

  /** Selects line `line` (from 1) of `textarea`, where the server found the problem. */
  function selectLine(textarea, line) {
    const lines = textarea.value.split('\n');
    const start = lines.slice(0, line - 1).reduce((at, text) => at + text.length + 1, 0);
    textarea.focus();
    textarea.setSelectionRange(start, start + (lines[line - 1] || '').length);
  }

  // ---- a replica's logs ---------------------------------------------------------------

  let logsOf = null;
  async function openLogs(id) {
    logsOf = id;
    $('#logs-title').textContent = `Logs of ${id}`;
    const dialog = $('#logs');
    if (!dialog.open) dialog.showModal();
    const pre = $('#logs-lines');
    pre.textContent = 'Loading…';
    try {
      const answer = await api('GET', `/api/replicas/${encodeURIComponent(id)}/logs?tail=200`);
      if (logsOf !== id) return;
      const lines = (answer && answer.lines) || [];
      pre.replaceChildren(
        ...lines.map((l) =>
          el('div', { className: l.stream === 'stderr' ? 'stderr' : '' }, el('time', { textContent: clock(l.at_s) }), ` ${l.line}`),
        ),
      );
      if (!lines.length) pre.textContent = 'No lines. (A Python replica\'s stdout and stderr show here; Rust replicas write none.)';
      pre.scrollTop = pre.scrollHeight;
    } catch (e) {
      if (logsOf === id) pre.textContent = `Cannot read the logs: ${e.message}`;
    }
  }
  $('#logs-refresh').addEventListener('click', () => logsOf && openLogs(logsOf));
  $('#logs-close').addEventListener('click', () => $('#logs').close());

  Object.assign(window.Ferro, { renderTrafficForm, openLogs });
})();
