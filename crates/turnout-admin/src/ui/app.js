// turnout's dashboard: polls the admin API every second (status, stats, events) and renders
// it; the actions call the same API with the token kept in this tab's session storage only.
// Any script error is recorded in window.turnoutErrors (the browser test reads it).
'use strict';

window.turnoutErrors = [];
window.addEventListener('error', (e) => window.turnoutErrors.push(String(e.message)));
window.addEventListener('unhandledrejection', (e) => window.turnoutErrors.push(String(e.reason)));
document.addEventListener('securitypolicyviolation', (e) => window.turnoutErrors.push(`CSP: ${e.violatedDirective} ${e.blockedURI}`));

const POLL_MS = 1000;
const CHART_POINTS = 120;
const $ = (id) => document.getElementById(id);
const seen = { stats: 0, events: 0 };
const series = {};
let status = null;

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === 'class') node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) {
    if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
  }
  return node;
}

function token() {
  return sessionStorage.getItem('turnout-token') || '';
}

// One admin call; rejects with the API's own error text and status.
async function api(method, path, body) {
  // Says who acts, for the events ("dashboard").
  const headers = { 'X-Turnout-Client': 'dashboard' };
  if (token()) headers.Authorization = 'Bearer ' + token();
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const resp = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await resp.text();
  let json;
  try { json = JSON.parse(text); } catch (_) { json = { error: text }; }
  if (!resp.ok) {
    const err = new Error(`${resp.status}: ${json.error || resp.statusText}`);
    err.status = resp.status;
    throw err;
  }
  return json;
}

// A pool's colour, the same on every load.
function colour(name) {
  let h = 0;
  for (const c of name) h = (h * 31 + c.charCodeAt(0)) % 360;
  if (name === 'blue') h = 215;
  if (name === 'green') h = 140;
  return `hsl(${h} 60% 42%)`;
}

function fmt(n, digits) {
  return n === null || n === undefined ? '–' : Number(n).toFixed(digits);
}

// A value to show: never the words null or undefined.
function text(v) {
  return v === null || v === undefined || v === '' ? '–' : String(v);
}

// "412 requests, 0.5% 5xx, p95 3.1 ms" for one side of a step.
function side(w) {
  if (!w) return '–';
  return `${text(w.requests)} requests, ${fmt(100 * (w.error_rate || 0), 1)}% 5xx, p95 ${fmt(w.p95_ms, 1)} ms`;
}

function renderSplit(s) {
  const bar = $('split');
  const total = Object.values(s.weights).reduce((a, b) => a + b, 0) || 1;
  bar.replaceChildren(...Object.entries(s.weights).map(([pool, w]) => {
    const pct = (100 * w) / total;
    const seg = el('span', { title: `${pool}: ${pct.toFixed(1)}% of new clients` },
      pct >= 12 ? `${pool} ${Math.round(pct)}%` : '');
    seg.style.width = pct + '%';
    seg.style.background = colour(pool);
    return seg;
  }));
  const banners = [];
  if (s.maintenance) banners.push(`Maintenance mode since ${s.maintenance.since}: ${s.maintenance.message}`);
  if (s.paused) banners.push(`Paused since ${s.paused.since}: ${s.paused.held} request(s) held`);
  if (s.prepared) banners.push(`A prepared ${s.prepared.change} waits for its commit`);
  if (s.mirror) banners.push(`Mirroring ${s.mirror}`);
  $('banners').replaceChildren(...banners.map((b) => el('div', { class: 'banner' }, b)));
}

function chart(label, points, pick, unit, digits) {
  const values = points.map(pick);
  const known = values.filter((v) => v !== null && v !== undefined);
  const max = Math.max(...known, 0) || 1;
  const n = Math.max(values.length - 1, 1);
  const coords = values
    .map((v, i) => (v === null || v === undefined ? null : `${(100 * i) / n},${40 - (38 * v) / max}`))
    .filter((c) => c !== null)
    .join(' ');
  const last = known.length ? known[known.length - 1] : null;
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('viewBox', '0 0 100 40');
  svg.setAttribute('preserveAspectRatio', 'none');
  const line = document.createElementNS('http://www.w3.org/2000/svg', 'polyline');
  line.setAttribute('points', coords);
  svg.append(line);
  return el('div', { class: 'chart' }, `${label} ${fmt(last, digits)}${unit}`, svg);
}

function renderPools(s) {
  const pools = Object.entries(s.pools).map(([name, p]) => {
    const role = name === s.active ? el('span', { class: 'tag live' }, 'live')
      : name === s.previous ? el('span', { class: 'tag' }, 'previous') : null;
    const points = (series[name] || []).slice(-CHART_POINTS);
    const rows = p.servers.map((srv) => {
      const state = srv.ejected ? ['ejected', 'ejected'] : srv.healthy ? ['up', 'up'] : ['down', 'down'];
      return el('tr', {},
        el('td', {}, srv.addr),
        el('td', { class: state[0] }, state[1]),
        el('td', {}, srv.last_error || ''));
    });
    return el('div', { class: 'pool', 'data-pool': name },
      el('h3', {}, el('span', {}, name), role,
        el('span', { class: 'muted' }, `${p.healthy_servers}/${p.servers.length} healthy · ${p.balance}`)),
      el('div', { class: 'numbers' },
        el('span', {}, `in flight ${p.in_flight}`),
        el('span', {}, `tunnels ${p.tunnels}`),
        el('span', {}, `requests ${p.requests}`)),
      el('div', { class: 'charts' },
        chart('req/s', points, (x) => x.rps, '', 1),
        chart('5xx', points, (x) => 100 * x.error_rate, '%', 1),
        chart('p95', points, (x) => x.p95_ms, ' ms', 1)),
      el('table', {}, el('tbody', {}, ...rows)));
  });
  $('pools').replaceChildren(...pools);
  const select = $('switch-to');
  const chosen = select.value;
  select.replaceChildren(...Object.keys(s.pools).map((name) => el('option', { value: name }, name)));
  if (chosen && s.pools[chosen]) select.value = chosen;
}

// The fleet this instance follows ([fleet]): its generation here against the newest seen,
// whether etcd answers, and every member with the generation it serves.
function renderFleet(s) {
  const f = s.fleet;
  $('fleet-section').hidden = !f;
  if (!f) return;
  const lag = f.seen - f.applied;
  $('fleet-summary').textContent = `fleet ${f.name}: this is ${f.instance}, serving generation ${f.applied}`
    + (lag > 0 ? ` (${lag} behind)` : '') + ` · etcd ${f.connected ? 'connected' : 'not answering'}`
    + ` · last change applied here ${f.last_apply_ms} ms after its commit`
    + (f.fleet_apply_ms !== undefined ? `, by every member within ${f.fleet_apply_ms} ms` : '')
    + (f.hold ? ` · health path failing: ${f.hold}` : '');
  $('fleet-members').replaceChildren(...f.members.map((m) => el('tr', {},
    el('td', {}, m.instance),
    el('td', {}, `generation ${m.applied}`),
    el('td', { class: m.behind ? 'down' : m.applied === f.seen ? 'up' : '' }, m.behind ? 'behind' : m.applied === f.seen ? 'current' : 'applying'),
    el('td', {}, m.behind || ''),
    el('td', { class: 'muted' }, m.version))));
}

// The rollout under way, or else the last one that ended: how far it got, each step's
// verdict with the figures it judged (target against baseline), and how it ended and why.
function renderRollout(rollouts) {
  const r = rollouts.current || (rollouts.history || [])[0];
  const box = $('rollout');
  $('rollout-abort').hidden = !rollouts.current;
  if (!r) {
    box.replaceChildren('no rollout yet');
    return;
  }
  const running = r.outcome === 'running';
  const head = running
    ? `Rollout ${r.id}: ${r.baseline} → ${r.target}, at ${r.percent}%${r.paused ? ' (paused)' : ''}, started ${text(r.started_at)}`
    : `Rollout ${r.id}: ${r.baseline} → ${r.target} ${r.outcome}, ${text(r.finished_at)}, after ${fmt((r.took_ms || 0) / 1000, 1)} s`;
  const rows = (r.steps || []).map((st) => el('tr', { class: st.verdict },
    el('td', {}, st.mirror ? `mirror ${st.mirror}%` : `${st.percent}%`),
    el('td', { class: st.verdict === 'pass' ? 'up' : 'down' }, `${st.verdict}${st.check ? ` (${st.check})` : ''}`),
    el('td', {}, side(st.target)),
    el('td', {}, side(st.baseline))));
  let bake = null;
  if (running && r.baking) {
    const b = r.baking;
    const total = (r.policy && r.policy.bake) || 1;
    const pct = Math.min(100, (100 * b.ran_ms) / total);
    const bar = el('span', {});
    bar.style.width = pct + '%';
    bake = el('div', { class: 'bake' },
      el('div', {}, `step ${b.percent}% baking: ${fmt(b.ran_ms / 1000, 0)} s of ${fmt(total / 1000, 0)} s`),
      el('div', { class: 'progress', role: 'progressbar', 'aria-valuenow': String(Math.round(pct)) }, bar),
      el('div', {}, `target: ${side(b.target)}`),
      el('div', {}, `baseline: ${side(b.baseline)}`));
  }
  box.className = '';
  // replaceChildren would write a null as the text "null": only the parts there are.
  box.replaceChildren(...[
    el('p', { class: running ? '' : r.outcome === 'passed' ? 'up' : 'down' }, head),
    bake,
    rows.length ? el('table', { class: 'steps' },
      el('thead', {}, el('tr', {}, el('th', {}, 'step'), el('th', {}, 'verdict'), el('th', {}, 'target'), el('th', {}, 'baseline'))),
      el('tbody', {}, ...rows)) : null,
    r.reason ? el('p', { class: 'down' }, `why: ${r.reason}`) : null,
  ].filter((part) => part !== null));
}

function renderCache(s) {
  const c = s.cache;
  $('cache').replaceChildren(c
    ? `cache: ${c.entries} entries, ${(c.bytes / 1048576).toFixed(1)} of ${(c.max_bytes / 1048576).toFixed(0)} MiB, ${c.hits} hits, ${c.misses} misses`
    : 'no cache');
  $('certs').replaceChildren(...(s.tls || []).map((t) => el('li', {},
    `${t.names.join(', ')}: expires ${t.not_after} (${t.days_left} days left)`)));
}

function renderEvents(events) {
  const list = $('events');
  for (const e of events) {
    list.prepend(el('li', { 'data-kind': e.kind }, el('time', {}, e.at.slice(11, 19)),
      el('span', { class: 'kind' }, e.kind), e.message, el('span', { class: 'by' }, ` by ${text(e.by)}`)));
  }
  while (list.children.length > 100) list.lastChild.remove();
}

async function poll() {
  try {
    const [s, stats, events, rollouts] = await Promise.all([
      api('GET', '/v1/status'),
      api('GET', `/v1/stats?since=${seen.stats}`),
      api('GET', `/v1/events?after=${seen.events}`),
      api('GET', '/v1/rollout'),
    ]);
    status = s;
    for (const [pool, points] of Object.entries(stats.pools)) {
      series[pool] = (series[pool] || []).concat(points).slice(-stats.points);
      for (const p of points) seen.stats = Math.max(seen.stats, p.t);
    }
    for (const e of events.events) seen.events = Math.max(seen.events, e.id);
    $('active').textContent = s.active;
    $('generation').textContent = `generation ${s.generation}`;
    renderSplit(s);
    renderPools(s);
    renderFleet(s);
    renderRollout(rollouts);
    $('maintenance').textContent = s.maintenance ? 'Maintenance off' : 'Maintenance on';
    renderCache(s);
    renderEvents(events.events);
    const i = s.process.instance;
    $('process').textContent = `${i ? `instance ${text(i.name)} (proxy ${text(i.listen)}, admin ${text(i.admin)}) · ` : ''}turnout ${text(s.process.version)}, pid ${text(s.process.pid)}, process generation ${text(s.process.generation)}, started ${text(s.process.started_at)}`;
    $('conn').textContent = `updated ${new Date().toLocaleTimeString()}`;
  } catch (e) {
    $('conn').textContent = e.status === 401
      ? 'the admin API needs a token: enter it under Actions'
      : `cannot read the admin API: ${e.message}`;
  }
}

function say(text, ok) {
  const m = $('message');
  m.textContent = text;
  m.className = ok ? 'ok' : 'error';
}

async function act(question, method, path, body, done) {
  if (!window.confirm(question)) return;
  try {
    const answer = await api(method, path, body);
    say(done(answer), true);
  } catch (e) {
    say(e.message, false);
  }
  poll();
}

function parseWeights(text) {
  const weights = {};
  for (const part of text.trim().split(/[\s,]+/)) {
    const [pool, w] = part.split('=');
    if (!pool || w === undefined || !/^\d+$/.test(w)) throw new Error(`not POOL=WEIGHT: ${part}`);
    weights[pool] = Number(w);
  }
  return weights;
}

function wire() {
  const input = $('token');
  input.value = token();
  input.addEventListener('input', () => sessionStorage.setItem('turnout-token', input.value));
  $('switch').addEventListener('click', () => {
    const to = $('switch-to').value;
    act(`Make ${to} the live pool?`, 'POST', '/v1/switch', { to },
      (a) => `switched: ${a.active} is live (generation ${a.generation})`);
  });
  $('rollback').addEventListener('click', () => act('Roll back to the previous pool?', 'POST', '/v1/rollback', undefined,
    (a) => `rolled back: ${a.active} is live (generation ${a.generation})`));
  $('split-button').addEventListener('click', () => {
    let weights;
    try { weights = parseWeights($('split-weights').value); } catch (e) { say(e.message, false); return; }
    act(`Split new clients ${JSON.stringify(weights)}?`, 'PUT', '/v1/split', { weights },
      (a) => `split: ${JSON.stringify(a.weights)} (generation ${a.generation})`);
  });
  $('pause').addEventListener('click', () => act('Pause: hold new requests until resumed?', 'POST', '/v1/pause', undefined,
    () => 'paused: new requests are held'));
  $('resume').addEventListener('click', () => act('Resume: release the held requests?', 'POST', '/v1/resume', undefined,
    () => 'resumed'));
  $('maintenance').addEventListener('click', () => {
    if (status && status.maintenance) {
      act('End maintenance mode: serve every request again?', 'DELETE', '/v1/maintenance', undefined,
        () => 'maintenance mode is off');
    } else {
      const message = $('maintenance-message').value.trim();
      act('Maintenance mode: answer every request (but the health path and the allow-lists) with 503 and the maintenance page?',
        'POST', '/v1/maintenance', message ? { message } : {}, () => 'maintenance mode is on');
    }
  });
  $('rollout-abort').addEventListener('click', () => act('Abort the rollout: every new client back to the baseline?',
    'POST', '/v1/rollout/abort', undefined, (a) => `rollout ${a.id} aborted; new clients go back to ${a.baseline}`));
  poll();
  setInterval(poll, POLL_MS);
}

wire();
