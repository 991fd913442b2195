// sessiongate admin dashboard: a small single-page app over the admin JSON API.
// No framework and no build step. Untrusted text (user agents, usernames, reasons) is only ever
// put into the page as text nodes, never as HTML. The admin token lives in sessionStorage and
// travels in the Authorization header only.
'use strict';

const LANGS = ['en', 'de', 'fr', 'es', 'pt'];
const API = '/magic-sessionmanager';
const PAGE_SIZE = 25;
const RISKY_FROM = 50;

const state = {
  token: sessionStorage.getItem('sg.token'),
  lang: pickLang(),
  stream: null,
  view: null,
};

function pickLang() {
  const saved = localStorage.getItem('sg.lang');
  if (LANGS.includes(saved)) return saved;
  for (const l of navigator.languages || [navigator.language || 'en']) {
    const base = String(l).toLowerCase().split('-')[0];
    if (LANGS.includes(base)) return base;
  }
  return 'en';
}

function t(key, vars) {
  const dict = window.SG_I18N[state.lang] || window.SG_I18N.en;
  let s = dict[key] ?? window.SG_I18N.en[key] ?? key;
  for (const [k, v] of Object.entries(vars || {})) s = s.replace(`{${k}}`, String(v));
  return s;
}

function applyI18n(root) {
  document.documentElement.lang = state.lang;
  for (const el of (root || document).querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
}

// Element builder: h('td', {class: 'x'}, 'text', child). Strings become text nodes.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'text') el.textContent = v;
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

// ----- formatting ---------------------------------------------------------------------------

function fmtDate(iso) {
  if (!iso) return '—';
  return new Intl.DateTimeFormat(state.lang, { dateStyle: 'medium', timeStyle: 'medium' }).format(new Date(iso));
}

function fmtRelative(iso) {
  if (!iso) return '—';
  const secs = Math.round((new Date(iso).getTime() - Date.now()) / 1000);
  const rtf = new Intl.RelativeTimeFormat(state.lang, { numeric: 'auto' });
  const abs = Math.abs(secs);
  if (abs < 60) return rtf.format(secs, 'second');
  if (abs < 3600) return rtf.format(Math.round(secs / 60), 'minute');
  if (abs < 86400) return rtf.format(Math.round(secs / 3600), 'hour');
  return rtf.format(Math.round(secs / 86400), 'day');
}

function fmtNumber(n) {
  return new Intl.NumberFormat(state.lang).format(n ?? 0);
}

function flagOf(code) {
  if (!code || code.length !== 2) return '';
  return String.fromCodePoint(...[...code.toUpperCase()].map((c) => 0x1f1e6 + c.charCodeAt(0) - 65));
}

// Small inline SVG device icons (no icon font, no emoji font needed).
function deviceIcon(type) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', '0 0 16 16');
  svg.setAttribute('class', 'icon');
  svg.setAttribute('aria-hidden', 'true');
  const path = document.createElementNS(ns, 'path');
  const phone = ['mobile', 'smartphone', 'tablet', 'mobilephone'].includes(type);
  path.setAttribute('d', phone
    ? 'M5 1.5h6a1 1 0 0 1 1 1v11a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1v-11a1 1 0 0 1 1-1zM7 12.5h2'
    : 'M2 2.5h12a.5.5 0 0 1 .5.5v7.5a.5.5 0 0 1-.5.5H2a.5.5 0 0 1-.5-.5V3a.5.5 0 0 1 .5-.5zM6 13.5h4M8 11v2.5');
  svg.append(path);
  return svg;
}

function statusOf(s) {
  if (!s.isActive) return 'ended';
  return s.isTrulyActive ? 'active' : 'inactive';
}

function badge(kind) {
  return h('span', { class: `badge ${kind}` }, t(`status.${kind}`));
}

function threat(score) {
  if (score === null || score === undefined) return h('span', { class: 'muted' }, '—');
  const cls = score >= 70 ? 'high' : score >= 40 ? 'mid' : 'low';
  return h('span', { class: `threat ${cls}`, 'data-score': score }, String(score));
}

// Country names in the dashboard's language (the geo data has English ones).
function countryName(geo) {
  if (!geo.countryCode) return geo.country;
  try {
    return new Intl.DisplayNames([state.lang], { type: 'region' }).of(geo.countryCode) || geo.country;
  } catch (_) {
    return geo.country;
  }
}

function place(geo) {
  if (!geo) return h('span', { class: 'muted' }, '—');
  const flag = flagOf(geo.countryCode);
  return h('span', {}, flag ? h('span', { 'aria-hidden': 'true' }, flag + ' ') : null,
    [geo.city, countryName(geo)].filter(Boolean).join(', ') || '—');
}

// The login address, and where the session was last used from when that differs.
function ipCell(s) {
  if (!s.lastIpAddress || s.lastIpAddress === s.ipAddress) return s.ipAddress;
  return h('span', { class: 'last-ip', title: t('detail.lastIp') }, s.ipAddress, h('br'),
    h('small', { class: 'muted' }, `→ ${s.lastIpAddress}`));
}

function lastSeen(s) {
  const l = s.lastSeenFrom;
  if (!l) return s.lastIpAddress || null;
  const at = [l.countryCode, l.asn ? `AS${l.asn}` : null, l.browser].filter(Boolean).join(' · ');
  const changes = l.changes ? ` — ${t('detail.changes', { n: l.changes })}` : '';
  return `${l.ipAddress} (${at}, ${fmtDate(l.at)})${changes}`;
}

// ----- API ----------------------------------------------------------------------------------

class Unauthorized extends Error {}

async function api(path, opts = {}) {
  const res = await fetch(path, {
    method: opts.method || 'GET',
    headers: { authorization: `Bearer ${state.token}`, ...(opts.body ? { 'content-type': 'application/json' } : {}) },
    body: opts.body ? JSON.stringify(opts.body) : undefined,
  });
  if (res.status === 401) throw new Unauthorized();
  if (!res.ok) {
    let msg = `${res.status}`;
    try { msg = (await res.json()).error?.message || msg; } catch (_) { /* not JSON */ }
    throw new Error(msg);
  }
  return opts.raw ? res : res.json();
}

function showError(err) {
  if (err instanceof Unauthorized) {
    logout(t('login.expired'));
    return;
  }
  const main = document.getElementById('main');
  main.prepend(h('div', { class: 'notice error', role: 'alert' }, t('error', { message: err.message })));
}

// ----- live updates (Server-Sent Events over fetch, so the token goes in a header) ----------

function startStream() {
  stopStream();
  const ctrl = new AbortController();
  state.stream = ctrl;
  const live = document.getElementById('live');
  const run = async () => {
    try {
      const res = await fetch(`${API}/events`, { headers: { authorization: `Bearer ${state.token}` }, signal: ctrl.signal });
      if (res.status === 401) {
        // The token was revoked or replaced: retrying would only count as failed logins.
        logout(t('login.expired'));
        return;
      }
      if (!res.ok || !res.body) throw new Error(String(res.status));
      live.className = 'live on';
      live.textContent = t('live.on');
      const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = '';
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let i;
        while ((i = buf.indexOf('\n\n')) >= 0) {
          handleEvent(buf.slice(0, i));
          buf = buf.slice(i + 2);
        }
      }
    } catch (e) {
      if (ctrl.signal.aborted) return;
    }
    if (ctrl.signal.aborted) return;
    live.className = 'live';
    live.textContent = t('live.off');
    setTimeout(() => { if (state.stream === ctrl) startStream(); }, 2000);
  };
  run();
}

function stopStream() {
  if (state.stream) state.stream.abort();
  state.stream = null;
}

function handleEvent(block) {
  let event = 'message';
  let data = '';
  for (const line of block.split('\n')) {
    if (line.startsWith('event:')) event = line.slice(6).trim();
    else if (line.startsWith('data:')) data += line.slice(5).trim();
  }
  if (event !== 'session' && event !== 'resync') return;
  let notice = {};
  try { notice = JSON.parse(data || '{}'); } catch (_) { return; }
  if (state.view && state.view.onNotice) state.view.onNotice(event === 'resync' ? null : notice);
}

// A burst of notices causes one reload.
function debounce(fn, ms) {
  let timer;
  return (...a) => { clearTimeout(timer); timer = setTimeout(() => fn(...a), ms); };
}

// ----- confirmation dialog ------------------------------------------------------------------

function confirmAction(text) {
  const dlg = document.getElementById('confirm');
  document.getElementById('confirm-text').textContent = text;
  return new Promise((resolve) => {
    const done = (v) => { dlg.close(); cleanup(); resolve(v); };
    const ok = () => done(true);
    const cancel = () => done(false);
    const onCancel = (e) => { e.preventDefault(); done(false); };
    const okBtn = document.getElementById('confirm-ok');
    const cancelBtn = document.getElementById('confirm-cancel');
    function cleanup() {
      okBtn.removeEventListener('click', ok);
      cancelBtn.removeEventListener('click', cancel);
      dlg.removeEventListener('cancel', onCancel);
    }
    okBtn.addEventListener('click', ok);
    cancelBtn.addEventListener('click', cancel);
    dlg.addEventListener('cancel', onCancel);
    dlg.showModal();
    cancelBtn.focus();
  });
}

// ----- views --------------------------------------------------------------------------------

function loginView(message) {
  const input = h('input', { id: 'token', type: 'password', autocomplete: 'off', required: true });
  const form = h('form', { 'aria-labelledby': 'login-title' },
    h('label', { for: 'token' }, t('login.token')), input,
    h('button', { type: 'submit', id: 'login-submit' }, t('login.submit')),
    h('p', { class: 'muted' }, t('login.help')));
  const box = h('section', { class: 'card login' }, h('h1', { id: 'login-title' }, t('login.title')),
    message ? h('div', { class: 'notice error', role: 'alert', id: 'login-error' }, message) : null, form);
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    state.token = input.value.trim();
    try {
      await api(`${API}/stats`);
    } catch (err) {
      state.token = null;
      render(loginView(err instanceof Unauthorized ? t('login.wrong') : t('error', { message: err.message })));
      return;
    }
    sessionStorage.setItem('sg.token', state.token);
    location.hash = '#/sessions';
    route();
  });
  setTimeout(() => input.focus(), 0);
  return { node: box };
}

function sessionsView(params) {
  const q = {
    user: params.get('user') || '', country: params.get('country') || '', status: params.get('status') || '',
    risky: params.get('risky') === '1', page: Number(params.get('page') || 1),
  };
  const root = h('section', {});
  const body = h('div', {});
  const input = (id, key, value) => h('label', { for: id }, t(key), h('input', { id, value, size: id === 'f-country' ? 4 : 18 }));
  const status = h('select', { id: 'f-status' },
    ['', 'active', 'ended'].map((v) => h('option', { value: v, selected: q.status === v }, t(v ? `filter.${v}` : 'filter.all'))));
  const form = h('form', { class: 'filters card', role: 'search' },
    input('f-user', 'filter.user', q.user), input('f-country', 'filter.country', q.country),
    h('label', { for: 'f-status' }, t('filter.status'), status),
    h('label', { class: 'check', for: 'f-risky' }, h('input', { id: 'f-risky', type: 'checkbox', checked: q.risky }), t('filter.risky')),
    h('button', { type: 'submit' }, t('filter.apply')),
    h('button', { type: 'button', class: 'secondary', onclick: () => { location.hash = '#/sessions'; } }, t('filter.reset')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    const v = (id) => document.getElementById(id).value.trim();
    if (v('f-user')) p.set('user', v('f-user'));
    if (v('f-country')) p.set('country', v('f-country'));
    if (v('f-status')) p.set('status', v('f-status'));
    if (document.getElementById('f-risky').checked) p.set('risky', '1');
    location.hash = `#/sessions?${p}`;
  });
  root.append(h('h1', {}, t('sessions.title')), form, body);

  const load = async () => {
    const p = new URLSearchParams({ page: q.page, pageSize: PAGE_SIZE, sort: '-loginTime' });
    if (q.user) p.set('user', q.user);
    if (q.country) p.set('country', q.country);
    if (q.status) p.set('active', q.status === 'active' ? 'true' : 'false');
    if (q.risky) p.set('minThreat', RISKY_FROM);
    const res = await api(`${API}/sessions?${p}`);
    const rows = res.data.map((s) => h('tr', { 'data-session': s.sessionId },
      h('td', {}, h('a', { href: `#/user/${encodeURIComponent(s.userId)}` }, s.user?.username || s.userId)),
      h('td', { title: s.deviceType }, deviceIcon(s.deviceType), ` ${s.browserName} · ${s.osName}`),
      h('td', {}, ipCell(s)),
      h('td', {}, place(s.geoLocation)),
      h('td', {}, h('a', { href: `#/session/${encodeURIComponent(s.sessionId)}` }, fmtDate(s.loginTime))),
      h('td', { title: fmtDate(s.lastActive), 'data-time': s.lastActive }, fmtRelative(s.lastActive)),
      h('td', {}, badge(statusOf(s))),
      h('td', {}, threat(s.threatScore))));
    const pg = res.meta.pagination;
    const pages = Math.max(1, pg.pageCount);
    const go = (n) => { const p2 = new URLSearchParams(params); p2.set('page', n); location.hash = `#/sessions?${p2}`; };
    body.replaceChildren(
      h('table', { id: 'sessions-table' },
        h('caption', {}, t('page.of', { page: pg.page, pages, total: fmtNumber(pg.total) })),
        h('thead', {}, h('tr', {}, ['col.user', 'col.device', 'col.ip', 'col.location', 'col.login', 'col.lastActive', 'col.status', 'col.threat']
          .map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, rows.length ? rows : h('tr', {}, h('td', { colspan: 8, class: 'muted' }, t('empty'))))),
      h('div', { class: 'pager' },
        h('button', { type: 'button', class: 'secondary', disabled: pg.page <= 1, onclick: () => go(pg.page - 1) }, t('page.prev')),
        h('button', { type: 'button', class: 'secondary', disabled: pg.page >= pages, onclick: () => go(pg.page + 1) }, t('page.next'))));
  };
  const reload = debounce(() => load().catch(showError), 250);
  // Relative times move on without asking the server.
  const ticker = setInterval(() => {
    for (const td of root.querySelectorAll('td[data-time]')) td.textContent = fmtRelative(td.dataset.time);
  }, 30000);
  return { node: root, load, onNotice: () => reload(), dispose: () => clearInterval(ticker) };
}

function kv(pairs) {
  return h('dl', { class: 'grid' }, pairs.filter(([, v]) => v !== undefined).flatMap(([k, v]) =>
    [h('dt', {}, t(k)), h('dd', {}, v === null || v === '' ? t('detail.none') : v)]));
}

function detailView(id) {
  const root = h('section', {});
  let sessionId = id;
  // A confirmation that survives the reloads live updates cause.
  let flash = null;
  const load = async () => {
    const s = (await api(`${API}/sessions/${encodeURIComponent(id)}`)).data;
    sessionId = s.sessionId;
    const g = s.geoLocation;
    const flags = [s.isVpn && 'flag.vpn', s.isProxy && 'flag.proxy', s.isTor && 'flag.tor', s.isDatacenter && 'flag.datacenter']
      .filter(Boolean).map((k) => t(k)).join(', ');
    const logout = h('button', { type: 'button', class: 'danger', id: 'force-logout', disabled: !s.isActive }, t('detail.forceLogout'));
    logout.addEventListener('click', async () => {
      if (!(await confirmAction(t('detail.confirmLogout')))) return;
      try {
        await api(`${API}/sessions/${encodeURIComponent(s.sessionId)}/terminate`, { method: 'POST', body: { reason: 'admin_terminated' } });
        flash = 'detail.ended';
        await load();
      } catch (e) { showError(e); }
    });
    root.replaceChildren(
      flash ? h('div', { class: 'notice ok', role: 'status', id: 'logout-done' }, t(flash)) : '',
      h('p', {}, h('a', { href: '#/sessions' }, '← ' + t('detail.back'))),
      h('h1', {}, `${t('detail.title')} `, h('code', {}, s.sessionId), ' ', badge(statusOf(s))),
      h('div', { class: 'actions' }, logout,
        h('a', { href: `#/user/${encodeURIComponent(s.userId)}` }, `${t('detail.user')}: ${s.user?.username || s.userId}`)),
      h('div', { class: 'card' }, kv([
        ['detail.user', `${s.user?.username || ''} (${s.userId}) ${s.user?.email || ''}`.trim()],
        ['detail.sessionId', s.sessionId], ['detail.documentId', s.documentId],
        ['col.ip', s.ipAddress], ['detail.lastIp', lastSeen(s)], ['detail.userAgent', s.userAgent],
        ['detail.browser', s.browserName], ['detail.os', s.osName], ['col.device', s.deviceType],
        ['detail.loginTime', fmtDate(s.loginTime)], ['col.lastActive', `${fmtDate(s.lastActive)} (${fmtRelative(s.lastActive)})`],
        ['detail.logoutTime', s.logoutTime ? fmtDate(s.logoutTime) : null], ['detail.endReason', s.endReason],
      ])),
      h('h2', {}, t('detail.geo')),
      h('div', { class: 'card' }, kv([
        ['col.location', place(g)],
        ['detail.coordinates', g && g.lat != null ? `${g.lat.toFixed(4)}, ${g.lon.toFixed(4)}` : null],
        ['detail.timezone', g?.timezone ?? null],
        ['detail.network', g && (g.asn || g.isp) ? `AS${g.asn ?? '?'} ${g.isp ?? ''}` : null],
        ['detail.flags', flags || null],
      ])),
      h('h2', {}, t('detail.risk')),
      h('div', { class: 'card' }, kv([['detail.score', threat(s.threatScore)]]),
        (s.riskSignals || []).length
          ? h('ul', { id: 'risk-signals' }, s.riskSignals.map((r) => h('li', {}, `${r.name}: +${r.points} ${t('detail.points')}`)))
          : h('p', { class: 'muted' }, t('detail.none'))),
      h('h2', {}, t('detail.tokens')),
      h('div', { class: 'card' }, kv([
        ['detail.rotations', String(s.tokens?.rotationCount ?? 0)],
        ['detail.accessExp', s.tokens?.accessExpiresAt ? fmtDate(s.tokens.accessExpiresAt) : null],
        ['detail.refreshExp', s.tokens?.refreshExpiresAt ? fmtDate(s.tokens.refreshExpiresAt) : null],
      ]), (s.tokens?.rotations || []).length ? h('ol', {}, s.tokens.rotations.map((r) => h('li', {}, fmtDate(r)))) : null),
      h('h2', {}, t('detail.audit')),
      auditTable(s.audit || []));
  };
  const reload = debounce(() => load().catch(showError), 250);
  return { node: root, load, onNotice: (n) => { if (!n || n.sessionId === sessionId) reload(); } };
}

function userView(userId) {
  const root = h('section', {});
  const load = async () => {
    const res = await api(`${API}/users/${encodeURIComponent(userId)}/sessions`);
    const blocked = !!res.meta.blocked;
    const first = res.data[0];
    const name = first?.user?.username || userId;
    const terminateAll = h('button', { type: 'button', class: 'danger', id: 'terminate-all' }, t('user.terminateAll'));
    terminateAll.addEventListener('click', async () => {
      if (!(await confirmAction(t('user.confirmTerminateAll')))) return;
      try {
        await api(`${API}/user/${encodeURIComponent(userId)}/terminate-all`, { method: 'POST', body: { reason: 'admin_terminated' } });
        await load();
      } catch (e) { showError(e); }
    });
    const toggle = h('button', { type: 'button', class: blocked ? 'secondary' : 'danger', id: 'toggle-block' }, t(blocked ? 'user.unblock' : 'user.block'));
    toggle.addEventListener('click', async () => {
      if (!blocked && !(await confirmAction(t('user.confirmBlock')))) return;
      try {
        await api(`${API}/user/${encodeURIComponent(userId)}/${blocked ? 'unblock' : 'block'}`, { method: 'POST', body: {} });
        await load();
      } catch (e) { showError(e); }
    });
    root.replaceChildren(
      h('p', {}, h('a', { href: '#/sessions' }, '← ' + t('detail.back'))),
      h('h1', {}, t('user.title', { user: name }), ' ', blocked ? h('span', { class: 'badge blocked', id: 'blocked-badge' }, t('user.blocked')) : null),
      h('p', { class: 'muted' }, t('user.counts', { count: res.meta.count, active: res.meta.active })),
      h('div', { class: 'actions' }, terminateAll, toggle),
      h('table', {},
        h('thead', {}, h('tr', {}, ['col.session', 'col.device', 'col.ip', 'col.location', 'col.lastActive', 'col.status', 'col.threat']
          .map((k) => h('th', { scope: 'col' }, t(k))))),
        h('tbody', {}, res.data.map((s) => h('tr', {},
          h('td', {}, h('a', { href: `#/session/${encodeURIComponent(s.sessionId)}` }, fmtDate(s.loginTime))),
          h('td', { title: s.deviceType }, deviceIcon(s.deviceType), ` ${s.browserName} · ${s.osName}`),
          h('td', {}, ipCell(s)), h('td', {}, place(s.geoLocation)),
          h('td', { title: fmtDate(s.lastActive) }, fmtRelative(s.lastActive)),
          h('td', {}, badge(statusOf(s))), h('td', {}, threat(s.threatScore)))))));
  };
  const reload = debounce(() => load().catch(showError), 250);
  return { node: root, load, onNotice: (n) => { if (!n || n.userId === String(userId)) reload(); } };
}

// Bar chart as plain SVG. `items`: [{label, value}]; horizontal bars when `horizontal`.
function barChart(title, items, { horizontal = false, alt = false } = {}) {
  const max = Math.max(1, ...items.map((i) => i.value));
  const ns = 'http://www.w3.org/2000/svg';
  const el = (tag, attrs, text) => {
    const e = document.createElementNS(ns, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const width = 360;
  const rowH = 18;
  const height = horizontal ? Math.max(40, items.length * (rowH + 4) + 10) : 180;
  const svg = el('svg', { class: 'chart', viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': title });
  svg.append(el('title', {}, title));
  if (horizontal) {
    items.forEach((it, i) => {
      const y = 5 + i * (rowH + 4);
      const w = ((width - 110) * it.value) / max;
      svg.append(el('text', { x: 0, y: y + 13 }, it.label));
      const r = el('rect', { class: `bar${alt ? ' alt' : ''}`, x: 60, y, width: Math.max(1, w), height: rowH });
      r.append(el('title', {}, `${it.label}: ${it.value}`));
      svg.append(r, el('text', { x: 64 + w, y: y + 13 }, fmtNumber(it.value)));
    });
  } else {
    const bw = (width - 30) / Math.max(1, items.length);
    items.forEach((it, i) => {
      const bh = ((height - 40) * it.value) / max;
      const x = 25 + i * bw;
      const r = el('rect', { class: `bar${alt ? ' alt' : ''}`, x: x + 1, y: height - 20 - bh, width: Math.max(1, bw - 2), height: Math.max(0, bh) });
      r.append(el('title', {}, `${it.label}: ${it.value}`));
      svg.append(r);
      if (items.length <= 8 || i % 3 === 0) svg.append(el('text', { x: x + 1, y: height - 6 }, it.label));
    });
    svg.append(el('text', { x: 0, y: 12 }, fmtNumber(max)));
  }
  return h('figure', { class: 'card' }, h('figcaption', {}, h('h2', {}, title)), svg);
}

function statsView() {
  const root = h('section', {});
  const load = async () => {
    const s = await api(`${API}/stats`);
    const metric = (k, v, id) => h('div', { class: 'metric', id }, h('div', { class: 'v' }, fmtNumber(v)), h('div', { class: 'k' }, t(k)));
    const hour = new Intl.DateTimeFormat(state.lang, { hour: '2-digit' });
    const countries = Object.entries(s.loginsByCountry || {}).sort((a, b) => b[1] - a[1]).slice(0, 10)
      .map(([c, n]) => ({ label: `${flagOf(c)} ${c}`, value: n }));
    root.replaceChildren(
      h('h1', {}, t('stats.title')),
      h('div', { class: 'cards' },
        metric('stats.online', s.online, 'stat-online'), metric('stats.active', s.activeSessions, 'stat-active'),
        metric('stats.total', s.totalSessions), metric('stats.blocked', s.blockedUsers),
        metric('stats.vpn', s.vpnLoginsLast24h), metric('stats.failed', s.failedLoginsLast24h)),
      h('div', { class: 'charts' },
        barChart(t('stats.perHour'), (s.loginsPerHour || []).map((x) => ({ label: hour.format(new Date(x.hour)), value: x.logins }))),
        barChart(t('stats.threat'), Object.entries(s.threatScoreDistribution || {}).map(([k, v]) => ({ label: k, value: v })), { alt: true }),
        barChart(t('stats.countries'), countries.length ? countries : [{ label: '—', value: 0 }], { horizontal: true })));
  };
  const reload = debounce(() => load().catch(showError), 1000);
  return { node: root, load, onNotice: () => reload() };
}

function auditTable(events) {
  return h('table', { id: 'audit-table' },
    h('thead', {}, h('tr', {}, ['col.time', 'col.type', 'col.user', 'col.session', 'col.ip', 'col.actor'].map((k) => h('th', { scope: 'col' }, t(k))))),
    h('tbody', {}, events.length ? events.map((e) => h('tr', {},
      h('td', {}, fmtDate(e.time)), h('td', {}, e.type), h('td', {}, e.user || '—'),
      h('td', {}, e.session ? h('a', { href: `#/session/${encodeURIComponent(e.session)}` }, e.session.slice(0, 13) + '…') : '—'),
      h('td', {}, e.ip || '—'), h('td', {}, e.actor || '—')))
      : h('tr', {}, h('td', { colspan: 6, class: 'muted' }, t('empty')))));
}

function auditView(params) {
  const root = h('section', {});
  const body = h('div', {});
  const q = { type: params.get('type') || '', user: params.get('user') || '', since: params.get('since') || '', until: params.get('until') || '' };
  const field = (id, key, type, value) => h('label', { for: id }, t(key), h('input', { id, type, value }));
  const form = h('form', { class: 'filters card', role: 'search' },
    field('a-type', 'audit.type', 'text', q.type), field('a-user', 'filter.user', 'text', q.user),
    field('a-since', 'audit.since', 'date', q.since), field('a-until', 'audit.until', 'date', q.until),
    h('button', { type: 'submit' }, t('filter.apply')),
    h('button', { type: 'button', class: 'secondary', id: 'download-csv', onclick: () => download().catch(showError) }, t('audit.download')));
  const query = () => {
    const p = new URLSearchParams();
    if (q.type) p.set('type', q.type);
    if (q.user) p.set('user', q.user);
    if (q.since) p.set('since', new Date(q.since).toISOString());
    if (q.until) p.set('until', new Date(q.until).toISOString());
    return p;
  };
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const p = new URLSearchParams();
    for (const [k, id] of [['type', 'a-type'], ['user', 'a-user'], ['since', 'a-since'], ['until', 'a-until']]) {
      const v = document.getElementById(id).value.trim();
      if (v) p.set(k, v);
    }
    location.hash = `#/audit?${p}`;
  });
  const download = async () => {
    const p = query();
    p.set('format', 'csv');
    const res = await api(`${API}/audit?${p}`, { raw: true });
    const url = URL.createObjectURL(await res.blob());
    const a = h('a', { href: url, download: 'sessiongate-audit.csv' });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  };
  root.append(h('h1', {}, t('audit.title')), form, body);
  const load = async () => {
    const p = query();
    // The API pages oldest first; without a start date show the last week, newest first.
    if (!q.since) p.set('since', new Date(Date.now() - 7 * 86400000).toISOString());
    p.set('limit', '5000');
    const res = await api(`${API}/audit?${p}`);
    body.replaceChildren(auditTable((res.data || []).slice(-200).reverse()));
  };
  return { node: root, load, onNotice: debounce(() => load().catch(showError), 1000) };
}

function alertsView() {
  const root = h('section', {});
  const load = async () => {
    const res = await api(`${API}/alerts?limit=200`);
    root.replaceChildren(h('h1', {}, t('alerts.title')),
      h('table', { id: 'alerts-table' },
        h('thead', {}, h('tr', {}, ['col.time', 'col.trigger', 'col.channel', 'col.status', 'col.attempts', 'col.error', 'col.actor']
          .map((k, i) => h('th', { scope: 'col' }, i === 6 ? '' : t(k))))),
        h('tbody', {}, (res.data || []).length ? res.data.map((a) => {
          const retry = a.status === 'dead' ? h('button', { type: 'button', class: 'secondary', onclick: async () => {
            try { await api(`${API}/alerts/${a.id}/retry`, { method: 'POST' }); await load(); } catch (e) { showError(e); }
          } }, t('alerts.retry')) : null;
          return h('tr', {}, h('td', {}, fmtDate(a.createdAt)), h('td', {}, a.trigger), h('td', {}, a.channel),
            h('td', {}, badge(a.status)), h('td', {}, String(a.attempts)), h('td', {}, a.lastError || '—'), h('td', {}, retry));
        }) : h('tr', {}, h('td', { colspan: 7, class: 'muted' }, t('empty'))))));
  };
  return { node: root, load };
}

function settingsView() {
  const root = h('section', {});
  const load = async () => {
    const s = (await api(`${API}/settings`)).data;
    const out = h('input', { id: 'keygen-out', class: 'keyout', readonly: true, 'aria-label': t('settings.keygen') });
    const copied = h('span', { class: 'muted', role: 'status' });
    const gen = h('button', { type: 'button', id: 'keygen' }, t('settings.generate'));
    gen.addEventListener('click', () => {
      const bytes = crypto.getRandomValues(new Uint8Array(32));
      out.value = btoa(String.fromCharCode(...bytes));
      copied.textContent = '';
    });
    const copy = h('button', { type: 'button', class: 'secondary' }, t('settings.copy'));
    copy.addEventListener('click', async () => {
      try { await navigator.clipboard.writeText(out.value); copied.textContent = t('settings.copied'); } catch (_) { out.select(); }
    });
    root.replaceChildren(h('h1', {}, t('settings.title')),
      h('h2', {}, t('settings.effective')), h('pre', { class: 'config', id: 'effective-config' }, s.effective),
      h('p', { class: 'muted' }, `sessiongate ${s.version}`),
      h('h2', {}, t('settings.keygen')), h('div', { class: 'card' }, h('p', {}, t('settings.keygenHelp')),
        h('div', { class: 'actions' }, gen, copy, copied), out));
  };
  return { node: root, load };
}

// ----- routing ------------------------------------------------------------------------------

function render(view) {
  if (state.view && state.view.dispose) state.view.dispose();
  state.view = view;
  const main = document.getElementById('main');
  main.replaceChildren(view.node);
}

function logout(message) {
  stopStream();
  state.token = null;
  sessionStorage.removeItem('sg.token');
  document.getElementById('nav').hidden = true;
  document.getElementById('logout').hidden = true;
  document.getElementById('live').textContent = '';
  location.hash = '';
  render(loginView(message));
}

async function route() {
  applyI18n();
  if (!state.token) {
    render(loginView());
    return;
  }
  document.getElementById('nav').hidden = false;
  document.getElementById('logout').hidden = false;
  if (!state.stream) startStream();
  const [path, query] = (location.hash.slice(1) || '/sessions').split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
  const views = {
    sessions: () => sessionsView(params), session: () => detailView(parts[1]), user: () => userView(parts[1]),
    stats: () => statsView(), audit: () => auditView(params), alerts: () => alertsView(), settings: () => settingsView(),
  };
  const name = views[parts[0]] ? parts[0] : 'sessions';
  for (const a of document.querySelectorAll('#nav a')) {
    const current = a.dataset.route === name || (a.dataset.route === 'sessions' && (name === 'session' || name === 'user'));
    if (current) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
  }
  const view = views[name]();
  render(view);
  try {
    if (view.load) await view.load();
  } catch (e) {
    showError(e);
  }
}

document.addEventListener('DOMContentLoaded', () => {
  const sel = document.getElementById('lang');
  sel.value = state.lang;
  sel.addEventListener('change', () => {
    state.lang = sel.value;
    localStorage.setItem('sg.lang', state.lang);
    route();
  });
  document.getElementById('logout').addEventListener('click', () => logout());
  window.addEventListener('hashchange', route);
  route();
});
