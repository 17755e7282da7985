// The dashboard's shared pieces: its state, the control API client (with the token it
// asks for on a 401), formatting, and the banner, result and confirmation boxes. The other
// scripts find them on `window.Ferro`.
'use strict';

(() => {
  const $ = (selector) => document.querySelector(selector);
  const TOKEN_KEY = 'ferroserve.token';
  const MAX_POINTS = 900;
  const POLL_MS = 1000;

  const state = {
    status: null,
    latest: null,
    tab: 'endpoints',
    filter: '',
    sort: { endpoints: ['name', 1], backends: ['name', 1], replicas: ['name', 1] },
    selected: null, // { kind: 'endpoint' | 'backend', name }
    generation: 0, // bumped on each selection, to drop answers for an older one
    series: null,
    seriesRetryAt: 0,
    latestRetryAt: 0,
    historyAt: 0,
    overall: { t: [], rps: [], errors: [], queued: [] },
    seeded: false, // whether the overall chart got the server's past
  };

  // ---- the control API ----------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body, message) {
      super(message);
      this.status = status;
      this.body = body;
    }
  }

  /** Calls the control API; the parsed JSON, or an ApiError with the server's `error`. */
  async function api(method, path, body) {
    const headers = {};
    const token = sessionStorage.getItem(TOKEN_KEY);
    if (token) headers.Authorization = `Bearer ${token}`;
    if (body !== undefined && typeof body !== 'string') {
      body = JSON.stringify(body);
      headers['Content-Type'] = 'application/json';
    }
    let response;
    try {
      response = await fetch(path, { method, headers, body, cache: 'no-store' });
    } catch (e) {
      throw new ApiError(0, null, `cannot reach the control API (${e.message})`);
    }
    const text = await response.text();
    let json = null;
    try {
      json = text ? JSON.parse(text) : null;
    } catch {
      json = null;
    }
    if (response.status === 401) {
      askToken(token ? 'The server refused that token.' : '');
      throw new ApiError(401, json, 'the control API asks for a token');
    }
    if (!response.ok) {
      const message = (json && json.error) || `${response.status} ${response.statusText}`;
      throw new ApiError(response.status, json, message);
    }
    return json;
  }

  function askToken(why) {
    const dialog = $('#token');
    $('#token-error').textContent = why;
    $('#token-error').hidden = !why;
    if (!dialog.open) dialog.showModal();
  }

  $('#token-form').addEventListener('submit', (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $('#token-input').value.trim());
    $('#token').close();
    window.Ferro.poll();
  });

  // ---- formatting ---------------------------------------------------------------------

  const el = (tag, props = {}, ...children) => {
    const node = document.createElement(tag);
    Object.assign(node, props);
    for (const child of children) node.append(child);
    return node;
  };
  const num = (v, digits = 1) =>
    v == null || Number.isNaN(v) ? '–' : v >= 100 ? Math.round(v).toString() : v.toFixed(digits);
  /** Milliseconds with the digits that matter (sub-millisecond ones too). */
  const ms = (v) => (v == null || Number.isNaN(v) ? '–' : v < 1 ? v.toFixed(3) : num(v, v < 10 ? 2 : 1));
  const percent = (v) => (v == null ? '–' : `${(v * 100).toFixed(v > 0 && v < 0.001 ? 2 : 1)}%`);
  const clock = (s) => new Date(s * 1000).toLocaleTimeString();
  function ago(s) {
    const d = Math.max(0, Date.now() / 1000 - s);
    if (d < 90) return `${Math.round(d)} s`;
    if (d < 5400) return `${Math.round(d / 60)} min`;
    if (d < 172800) return `${Math.round(d / 3600)} h`;
    return `${Math.round(d / 86400)} d`;
  }
  const weights = (map) =>
    Object.entries(map || {})
      .map(([name, w]) => `${name} ${Math.round(w * 1000) / 10}%`)
      .join(' · ');
  const tone = (status) =>
    ({ HEALTHY: 'ok', RUNNING: 'ok', UPDATING: 'warn', DEPLOYING: 'warn', STARTING: 'warn',
      STOPPING: 'warn', UNHEALTHY: 'bad', DEPLOY_FAILED: 'bad', RECOVERING: 'bad' })[status] || '';
  const health = (check) =>
    !check ? '–' : check.ok ? `ok, ${ago(check.at_s)} ago` : `failed ${ago(check.at_s)} ago: ${check.message || ''}`;

  function showBanner(message) {
    $('#banner').textContent = message;
    $('#banner').hidden = !message;
  }

  /** Shows what an action did (the resulting status) or the API's error. */
  function showResult(ok, text) {
    const box = $('#result');
    box.dataset.outcome = ok ? 'ok' : 'error';
    box.className = ok ? 'ok' : 'error';
    $('#result-text').textContent = text;
    box.hidden = false;
    clearTimeout(resultTimer);
    if (ok) resultTimer = setTimeout(() => (box.hidden = true), 15000);
  }
  let resultTimer = 0;
  $('#result-close').addEventListener('click', () => ($('#result').hidden = true));

  /** A confirmation dialog; resolves to whether the user confirmed. */
  function confirmAction(title, text) {
    const dialog = $('#confirm');
    $('#confirm-title').textContent = title;
    $('#confirm-text').textContent = text;
    dialog.returnValue = '';
    dialog.showModal();
    return new Promise((resolve) => {
      dialog.addEventListener('close', () => resolve(dialog.returnValue === 'ok'), { once: true });
    });
  }

  window.Ferro = {
    $, el, state, api, num, ms, percent, clock, ago, weights, tone, health,
    showBanner, showResult, confirmAction, MAX_POINTS, POLL_MS,
  };
})();
