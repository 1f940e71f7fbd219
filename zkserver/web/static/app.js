/* zkserver live monitor.
 *
 * Plain browser JavaScript, no build step and no third-party code. Talks to the web
 * listener only: /api/session (login, HttpOnly cookie), /api/devices, /api/attendance,
 * /api/stats, /devices/events (Server-Sent Events, see design.md "The event contract").
 */
(() => {
  'use strict';

  // ---------- vocabulary ----------
  // action: the terminal's in/out state.  [label, kind (colour), icon]
  const ACTIONS = {
    0: ['In', 'in', 'i-in'],
    1: ['Out', 'out', 'i-out'],
    2: ['Break out', 'break', 'i-break'],
    3: ['Break in', 'break', 'i-break'],
    4: ['OT in', 'ot', 'i-ot'],
    5: ['OT out', 'ot', 'i-ot'],
    255: ['—', 'none', 'i-none'],
  };
  const IN_ACTIONS = new Set([0, 3, 4]);
  const OUT_ACTIONS = new Set([1, 2, 5]);
  // method: the verify method (push verify codes).  [label, icon]
  const METHODS = {
    0: ['Password/any', 'i-keypad'],
    1: ['Fingerprint', 'i-fingerprint'],
    2: ['Card', 'i-card'],
    3: ['Password', 'i-password'],
    4: ['Card', 'i-card'],
    15: ['Face', 'i-face'],
    25: ['Palm', 'i-palm'],
    200: ['Other', 'i-other'],
  };
  const STATUS_LABELS = {
    online: 'Online', offline: 'Offline', pending: 'Pending',
    auth_failed: 'Auth failed', rejected: 'Rejected',
  };
  const CONN_LABELS = {
    connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline',
    signedout: 'Signed out',
  };

  const FEED_LIMIT = 100;        // rows fetched for the initial feed
  const MAX_ROWS = 1000;         // rows kept in the page
  const TODAY_PAGES = 50;        // x 1000 rows read to count today's punches
  const BACKOFF_MIN = 500;
  const BACKOFF_MAX = 15000;
  const WATCHDOG_MS = 30000;     // compare with /api/stats to catch a silently dead stream

  // ---------- state ----------
  const state = {
    started: false,
    devices: new Map(),          // device id -> device JSON (Device.public())
    rows: [],                    // punches, newest first
    byKey: new Map(),            // dedupe key -> row
    seq: 0,                      // arrival order, breaks timestamp ties
    today: localDate(new Date()),
    todayKeys: new Set(),
    todayIn: 0,
    todayOut: 0,
    todayByDevice: new Map(),
    users: new Map(),            // device id -> {names: Map, at: ms, promise}
    lastEventId: null,           // newest SSE id seen (string of digits)
    bootEventId: 0,              // events up to this id were history when the page loaded
    lastMessageAt: 0,
    source: null,
    attempts: 0,
    reconnectTimer: null,
    watchdogTimer: null,
    everOpened: false,
    filter: { device: '', user: '' },
  };

  const $ = (id) => document.getElementById(id);
  const el = {
    conn: $('conn'), connText: $('conn-text'),
    clockTime: $('clock-time'), clockDate: $('clock-date'),
    logout: $('logout'),
    loginView: $('login-view'), loginForm: $('login-form'), token: $('token-input'),
    loginError: $('login-error'), loginSubmit: $('login-submit'),
    appView: $('app-view'),
    statTotal: $('stat-total'), statIn: $('stat-in'), statOut: $('stat-out'),
    statOnline: $('stat-online'), statDevices: $('stat-devices'),
    feed: $('feed'), feedEmpty: $('feed-empty'), feedCount: $('feed-count'),
    filters: $('filters'), filterDevice: $('filter-device'), filterUser: $('filter-user'),
    pendingBanner: $('pending-banner'),
    devices: $('devices'), devicesEmpty: $('devices-empty'), devicesCount: $('devices-count'),
    toasts: $('toasts'),
    tplPunch: $('tpl-punch'), tplDevice: $('tpl-device'),
  };

  // ---------- small helpers ----------
  function pad(n) { return String(n).padStart(2, '0'); }
  function localDate(d) { return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`; }

  function rowKey(r) {
    return `${r.serial_number || r.device_id || ''}\u0000${r.user_id}\u0000${r.timestamp}`;
  }

  function setIcon(svg, id) { svg.querySelector('use').setAttribute('href', '#' + id); }

  class AuthError extends Error {}

  async function api(path, options = {}) {
    const init = {
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { Accept: 'application/json' },
      ...options,
    };
    if (options.json !== undefined) {
      init.body = JSON.stringify(options.json);
      init.headers['Content-Type'] = 'application/json';
      delete init.json;
    }
    const response = await fetch(path, init);
    if (response.status === 401) {
      throw new AuthError('unauthorized');
    }
    let body = null;
    try { body = await response.json(); } catch (_) { body = null; }
    if (!response.ok) {
      const message = (body && (body.error || body.detail)) || `HTTP ${response.status}`;
      throw new Error(message);
    }
    return body;
  }

  function toast(text, kind = 'info', ms = 5000) {
    const node = document.createElement('div');
    node.className = 'toast';
    node.dataset.kind = kind;
    node.textContent = text;
    el.toasts.append(node);
    setTimeout(() => node.remove(), ms);
  }

  function handleError(err, what) {
    if (err instanceof AuthError) {
      showLogin('Your session has ended. Please sign in again.');
      return;
    }
    console.warn(what, err);
    toast(`${what}: ${err.message}`, 'error');
  }

  // ---------- connection state ----------
  function setConn(name, detail) {
    el.conn.dataset.state = name;
    el.connText.textContent = detail ? `${CONN_LABELS[name]} ${detail}` : CONN_LABELS[name];
  }

  // ---------- login ----------
  function showLogin(message) {
    stopStream();
    state.started = false;
    el.appView.hidden = true;
    el.logout.hidden = true;
    el.loginView.hidden = false;
    el.loginError.textContent = message || '';
    el.loginSubmit.disabled = false;
    setConn('signedout');
    el.token.focus();
  }

  async function login(token) {
    const response = await fetch('/api/session', {
      method: 'POST',
      credentials: 'same-origin',
      cache: 'no-store',
      headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
      body: JSON.stringify({ token }),
    });
    if (response.status === 401) return false;
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    return true;
  }

  el.loginForm.addEventListener('submit', async (event) => {
    event.preventDefault();
    const token = el.token.value.trim();
    if (!token) {
      el.loginError.textContent = 'Enter the access token.';
      el.token.focus();
      return;
    }
    el.loginSubmit.disabled = true;
    el.loginError.textContent = '';
    try {
      if (await login(token)) {
        el.token.value = '';
        await boot();
      } else {
        el.loginError.textContent = 'That token was not accepted.';
        el.token.select();
      }
    } catch (err) {
      el.loginError.textContent = `Cannot reach the server (${err.message}).`;
    } finally {
      el.loginSubmit.disabled = false;
    }
  });

  el.logout.addEventListener('click', async () => {
    try {
      await fetch('/api/session', { method: 'DELETE', credentials: 'same-origin' });
    } catch (_) { /* signed out locally anyway */ }
    resetData();
    showLogin('Signed out.');
  });

  // ---------- start-up ----------
  async function start() {
    const params = new URLSearchParams(location.search);
    const urlToken = params.get('token');
    if (urlToken !== null) {
      // Never leave the token in the address bar, history or bookmarks.
      params.delete('token');
      const query = params.toString();
      history.replaceState(history.state, '', location.pathname + (query ? `?${query}` : '') + location.hash);
    }
    setConn('connecting');
    try {
      if (urlToken) {
        if (await login(urlToken)) {
          await boot();
        } else {
          showLogin('The token in the link was not accepted.');
        }
        return;
      }
      const response = await fetch('/api/session', { credentials: 'same-origin', cache: 'no-store' });
      if (response.status === 401) {
        showLogin();
      } else if (response.ok) {
        await boot();
      } else {
        throw new Error(`HTTP ${response.status}`);
      }
    } catch (err) {
      if (err instanceof AuthError) { showLogin(); return; }
      setConn('offline', '· retrying');
      setTimeout(start, 3000);
    }
  }

  function resetData() {
    state.devices.clear();
    state.rows = [];
    state.byKey.clear();
    state.users.clear();
    state.lastEventId = null;
    resetToday();
    el.feed.replaceChildren();
    el.devices.replaceChildren();
  }

  async function boot() {
    if (state.started) return;
    state.started = true;
    el.loginView.hidden = true;
    el.appView.hidden = false;
    el.logout.hidden = false;
    setConn('connecting');
    try {
      // The stream opens at the newest event id *before* the history is read, so any
      // punch committed in between arrives (again) on the stream and is deduplicated.
      const stats = await api('/api/stats').catch((err) => {
        if (err instanceof AuthError) throw err;
        return null;
      });
      if (stats && Number.isFinite(stats.last_event_id)) {
        state.lastEventId = String(stats.last_event_id);
        state.bootEventId = stats.last_event_id;
      }
      const [devices, page] = await Promise.all([
        api('/api/devices'),
        api(`/api/attendance?limit=${FEED_LIMIT}`),
      ]);
      setDevices(devices);
      addRows(page.items, false);
      render();
    } catch (err) {
      state.started = false;
      if (err instanceof AuthError) { showLogin(); return; }
      setConn('offline', '· retrying');
      setTimeout(boot, 3000);
      return;
    }
    openStream();
    countToday();
    startWatchdog();
  }

  // ---------- the event stream ----------
  function streamUrl() {
    return state.lastEventId !== null
      ? `/devices/events?last_event_id=${encodeURIComponent(state.lastEventId)}`
      : '/devices/events';
  }

  function openStream() {
    stopStream();
    if (!state.started) return;
    const source = new EventSource(streamUrl());
    state.source = source;
    source.onopen = () => {
      if (state.source !== source) return;
      const wasReconnect = state.everOpened;
      state.everOpened = true;
      state.attempts = 0;
      state.lastMessageAt = Date.now();
      setConn('live');
      if (wasReconnect) catchUp();
    };
    source.onmessage = (message) => {
      if (state.source !== source) return;
      state.lastMessageAt = Date.now();
      if (message.lastEventId && (state.lastEventId === null
          || Number(message.lastEventId) > Number(state.lastEventId))) {
        state.lastEventId = message.lastEventId;
      }
      let event;
      try { event = JSON.parse(message.data); } catch (_) { return; }
      handleEvent(event, Number(message.lastEventId) || 0);
    };
    source.onerror = () => {
      if (state.source !== source) return;
      // The browser would retry by itself after a network error, but gives up for good
      // on an HTTP error (401, 503 while the database is down, ...). Reconnect ourselves,
      // always with ?last_event_id= so the server replays what we missed.
      stopStream();
      scheduleReconnect();
    };
  }

  function stopStream() {
    if (state.source) {
      state.source.onopen = state.source.onmessage = state.source.onerror = null;
      state.source.close();
      state.source = null;
    }
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = null;
  }

  async function scheduleReconnect() {
    state.attempts += 1;
    const base = Math.min(BACKOFF_MAX, BACKOFF_MIN * 2 ** (state.attempts - 1));
    const delay = Math.round(base * (0.8 + Math.random() * 0.4));
    setConn('reconnecting');
    let reachable = true;
    try {
      const response = await fetch('/api/session', { credentials: 'same-origin', cache: 'no-store' });
      if (response.status === 401) { showLogin('Your session has ended. Please sign in again.'); return; }
    } catch (_) {
      reachable = false;
    }
    if (!state.started || state.source) return;
    if (!reachable || !navigator.onLine) setConn('offline', '· retrying');
    clearTimeout(state.reconnectTimer);
    state.reconnectTimer = setTimeout(openStream, delay);
  }

  window.addEventListener('online', () => {
    if (state.started && !state.source) { state.attempts = 0; openStream(); }
  });
  window.addEventListener('offline', () => { if (state.started) setConn('offline', '· no network'); });

  function startWatchdog() {
    clearInterval(state.watchdogTimer);
    state.watchdogTimer = setInterval(async () => {
      if (!state.started || !state.source || state.source.readyState !== EventSource.OPEN) return;
      if (Date.now() - state.lastMessageAt < WATCHDOG_MS) return;
      try {
        const stats = await api('/api/stats');
        if (stats.last_event_id > Number(state.lastEventId || 0)
            && Date.now() - state.lastMessageAt >= WATCHDOG_MS) {
          // Events exist that never reached us: the connection is dead without an error.
          stopStream();
          scheduleReconnect();
        }
      } catch (_) { /* the stream's own error handling covers an unreachable server */ }
    }, WATCHDOG_MS / 2);
  }

  async function catchUp() {
    // After a reconnect: device states may have changed; the replay brings the events,
    // this also covers an id the server no longer knows (a reset database).
    try {
      const [devices, page] = await Promise.all([
        api('/api/devices'), api(`/api/attendance?limit=${FEED_LIMIT}`),
      ]);
      setDevices(devices);
      addRows(page.items, false);
    } catch (err) {
      if (err instanceof AuthError) showLogin('Your session has ended. Please sign in again.');
    }
  }

  function handleEvent(event, id) {
    switch (event.type) {
      case 'attendance':
        addRows([event], true);
        break;
      case 'device_status':
        deviceStatus(event);
        break;
      case 'user_sync':
        state.users.delete(event.device_id);
        resolveNames(event.device_id);
        break;
      case 'command_result':
        if (id > state.bootEventId) {
          const device = state.devices.get(event.device_id);
          const name = device ? device.name : event.serial_number;
          const ok = event.status === 'done' || event.return_code === 0;
          toast(`${name}: ${event.command} ${ok ? 'done' : `failed (${event.return_code})`}`,
            ok ? 'info' : 'error');
        }
        break;
      default:
        break; // clients ignore unknown types
    }
  }

  // ---------- punches ----------
  function compareRows(a, b) {
    if (a.timestamp !== b.timestamp) return a.timestamp < b.timestamp ? 1 : -1;
    return b.seq - a.seq;
  }

  function insertIndex(row) {
    let lo = 0;
    let hi = state.rows.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (compareRows(state.rows[mid], row) < 0) lo = mid + 1; else hi = mid;
    }
    return lo;
  }

  function addRows(items, fresh) {
    const missingNames = new Set();
    // History arrives newest first: give older rows smaller sequence numbers.
    const ordered = fresh ? items : [...items].reverse();
    for (const item of ordered) {
      const key = rowKey(item);
      const existing = state.byKey.get(key);
      if (existing) {
        if (!existing.user_name && item.user_name) {
          existing.user_name = item.user_name;
          paintName(existing);
        }
        if (item.photo_id && !existing.photo_id) existing.photo_id = item.photo_id;
        continue;
      }
      const row = {
        key,
        device_id: item.device_id,
        device_name: item.device_name,
        serial_number: item.serial_number,
        user_id: String(item.user_id),
        user_name: item.user_name || cachedName(item.device_id, String(item.user_id)) || '',
        timestamp: item.timestamp,
        action: item.action,
        method: item.method,
        photo_id: item.photo_id || null,
        seq: ++state.seq,
        fresh,
        node: null,
      };
      state.byKey.set(key, row);
      const index = insertIndex(row);
      state.rows.splice(index, 0, row);
      countRow(row);
      if (matches(row)) placeRow(row, index);
      if (!row.user_name) missingNames.add(row.device_id);
    }
    while (state.rows.length > MAX_ROWS) {
      const old = state.rows.pop();
      state.byKey.delete(old.key);
      if (old.node) old.node.remove();
    }
    updateFeedMeta();
    for (const deviceId of missingNames) resolveNames(deviceId);
  }

  function matches(row) {
    const { device, user } = state.filter;
    if (device && row.device_id !== device) return false;
    if (user) {
      const needle = user.toLowerCase();
      if (!row.user_id.toLowerCase().includes(needle)
          && !(row.user_name || '').toLowerCase().includes(needle)) return false;
    }
    return true;
  }

  function placeRow(row, index) {
    const node = row.node || buildRow(row);
    let before = null;
    for (let i = index + 1; i < state.rows.length; i += 1) {
      const next = state.rows[i];
      if (next.node && next.node.parentNode === el.feed) { before = next.node; break; }
    }
    el.feed.insertBefore(node, before);
  }

  function dayLabel(date) {
    if (date === state.today) return 'Today';
    const [y, m, d] = date.split('-').map(Number);
    const day = new Date(y, m - 1, d);
    const yesterday = new Date();
    yesterday.setDate(yesterday.getDate() - 1);
    if (localDate(yesterday) === date) return 'Yesterday';
    if (Number.isNaN(day.getTime())) return date;
    return day.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
  }

  function buildRow(row) {
    const node = el.tplPunch.content.firstElementChild.cloneNode(true);
    const [date = '', time = ''] = String(row.timestamp).split(' ');
    node.dataset.key = row.key;
    node.dataset.serial = row.serial_number || '';
    node.dataset.deviceId = row.device_id || '';
    node.dataset.user = row.user_id;
    node.dataset.timestamp = row.timestamp;
    const timeEl = node.querySelector('.punch-time');
    timeEl.dateTime = String(row.timestamp).replace(' ', 'T');
    timeEl.querySelector('.hms').textContent = time || row.timestamp;
    timeEl.querySelector('.day').textContent = date ? dayLabel(date) : '';

    const [actionText, actionKind, actionIcon] = ACTIONS[row.action]
      || [`State ${row.action}`, 'none', 'i-none'];
    const action = node.querySelector('.action');
    action.dataset.kind = actionKind;
    setIcon(action, actionIcon);
    const actionLabel = action.querySelector('.action-text');
    actionLabel.textContent = actionText;
    if (row.action === 255) {
      actionLabel.setAttribute('aria-hidden', 'true');
      action.title = 'No in/out state';
      const hidden = document.createElement('span');
      hidden.className = 'visually-hidden';
      hidden.textContent = 'No in/out state';
      action.append(hidden);
    }

    const [methodText, methodIcon] = METHODS[row.method] || [`Method ${row.method}`, 'i-other'];
    const method = node.querySelector('.method');
    setIcon(method, methodIcon);
    method.querySelector('.method-text').textContent = methodText;

    node.querySelector('.device-text').textContent = row.device_name || row.serial_number || '';
    node.querySelector('.where').title = row.serial_number ? `Serial number ${row.serial_number}` : '';
    if (row.fresh) {
      node.classList.add('is-new');
      node.addEventListener('animationend', () => node.classList.remove('is-new'), { once: true });
    }
    row.node = node;
    paintName(row);
    return node;
  }

  function paintName(row) {
    if (!row.node) return;
    const name = row.node.querySelector('.name');
    const uid = row.node.querySelector('.uid');
    if (row.user_name) {
      name.textContent = row.user_name;
      uid.textContent = `ID ${row.user_id}`;
    } else {
      name.textContent = `User ${row.user_id}`;
      uid.textContent = 'Name not known';
    }
  }

  function render() {
    const nodes = [];
    for (const row of state.rows) {
      if (matches(row)) nodes.push(row.node || buildRow(row));
    }
    el.feed.replaceChildren(...nodes);
    updateFeedMeta();
  }

  function updateFeedMeta() {
    const shown = el.feed.childElementCount;
    const filtered = Boolean(state.filter.device || state.filter.user);
    el.feedEmpty.hidden = shown > 0;
    el.feedEmpty.textContent = filtered
      ? 'No punches match these filters.'
      : 'No punches yet. They appear here the moment a terminal sends one.';
    el.feedCount.textContent = filtered
      ? `${shown} of ${state.rows.length} shown`
      : shown ? `${shown} most recent` : '';
  }

  // ---------- user names ----------
  function cachedName(deviceId, userId) {
    const entry = state.users.get(deviceId);
    return entry && entry.names ? entry.names.get(userId) || '' : '';
  }

  function resolveNames(deviceId) {
    if (!deviceId) return;
    let entry = state.users.get(deviceId);
    const stale = entry && entry.names && Date.now() - entry.at > 60000;
    if (!entry || stale) {
      entry = { names: entry ? entry.names : null, at: Date.now(), promise: null };
      state.users.set(deviceId, entry);
      entry.promise = api(`/api/devices/${encodeURIComponent(deviceId)}/users`)
        .then((users) => {
          entry.names = new Map(users.filter((u) => u.name).map((u) => [String(u.user_id), u.name]));
          entry.at = Date.now();
        })
        .catch(() => { entry.names = entry.names || new Map(); });
    }
    const fill = () => {
      for (const row of state.rows) {
        if (row.device_id === deviceId && !row.user_name) {
          const name = cachedName(deviceId, row.user_id);
          if (name) { row.user_name = name; paintName(row); }
        }
      }
    };
    if (entry.promise) entry.promise.then(fill); else fill();
  }

  // ---------- today's totals ----------
  function resetToday() {
    state.todayKeys.clear();
    state.todayIn = 0;
    state.todayOut = 0;
    state.todayByDevice.clear();
    paintTotals();
  }

  function countRow(row) {
    if (!String(row.timestamp).startsWith(state.today) || state.todayKeys.has(row.key)) return;
    state.todayKeys.add(row.key);
    if (IN_ACTIONS.has(row.action)) state.todayIn += 1;
    else if (OUT_ACTIONS.has(row.action)) state.todayOut += 1;
    state.todayByDevice.set(row.device_id, (state.todayByDevice.get(row.device_id) || 0) + 1);
    scheduleTotals();
  }

  let totalsPending = false;
  function scheduleTotals() {
    if (totalsPending) return;
    totalsPending = true;
    setTimeout(() => { totalsPending = false; paintTotals(); }, 0);
  }

  function paintTotals() {
    el.statTotal.textContent = state.todayKeys.size.toLocaleString();
    el.statIn.textContent = state.todayIn.toLocaleString();
    el.statOut.textContent = state.todayOut.toLocaleString();
    const active = [...state.devices.values()].filter((d) => d.status !== 'rejected');
    el.statOnline.textContent = active.filter((d) => d.status === 'online').length;
    el.statDevices.textContent = active.length;
    for (const node of el.devices.children) {
      const count = state.todayByDevice.get(node.dataset.deviceId) || 0;
      node.querySelector('.device-today').textContent = count.toLocaleString();
    }
  }

  async function countToday() {
    // Today's punches (device local dates), page by page; live ones are counted as they come.
    const day = state.today;
    let cursor = null;
    try {
      for (let page = 0; page < TODAY_PAGES; page += 1) {
        const query = new URLSearchParams({ since: `${day} 00:00:00`, limit: '1000' });
        if (cursor) query.set('cursor', cursor);
        const result = await api(`/api/attendance?${query}`);
        if (day !== state.today) return;
        for (const item of result.items) countRow({ ...item, key: rowKey(item) });
        cursor = result.next_cursor;
        if (!cursor) break;
      }
    } catch (err) {
      if (err instanceof AuthError) showLogin();
    }
  }

  // ---------- devices ----------
  function setDevices(list) {
    const seen = new Set();
    for (const device of list) {
      seen.add(device.id);
      state.devices.set(device.id, device);
    }
    for (const id of [...state.devices.keys()]) if (!seen.has(id)) state.devices.delete(id);
    renderDevices();
  }

  let refetching = null;
  function refreshDevices() {
    if (!refetching) {
      refetching = api('/api/devices')
        .then(setDevices)
        .catch((err) => { if (err instanceof AuthError) showLogin(); })
        .finally(() => { refetching = null; });
    }
    return refetching;
  }

  function deviceStatus(event) {
    const device = state.devices.get(event.device_id);
    if (!device) { refreshDevices(); return; }
    device.status = event.status;
    if (event.last_seen) device.last_seen = event.last_seen;
    if (event.device_name) device.name = event.device_name;
    if (event.status === 'online') device.approved = true;
    if (event.status === 'rejected') device.approved = false;
    renderDevices();
  }

  function sortedDevices() {
    const rank = { pending: 0, auth_failed: 1, online: 2, offline: 3, rejected: 4 };
    return [...state.devices.values()].sort((a, b) =>
      (rank[a.status] ?? 3) - (rank[b.status] ?? 3) || a.name.localeCompare(b.name));
  }

  function renderDevices() {
    const existing = new Map([...el.devices.children].map((n) => [n.dataset.deviceId, n]));
    const nodes = sortedDevices().map((device) => {
      const node = existing.get(device.id) || buildDevice(device);
      paintDevice(node, device);
      return node;
    });
    // Keep focus where it was when the list is re-ordered.
    const focused = document.activeElement;
    el.devices.replaceChildren(...nodes);
    if (focused && el.devices.contains(focused)) focused.focus();
    el.devicesEmpty.hidden = nodes.length > 0;
    const pending = [...state.devices.values()].filter(isPending).length;
    el.devicesCount.textContent = pending ? `${pending} waiting for approval` : `${nodes.length} total`;
    // On a phone the device panel is below the feed: point at pending devices from the top.
    el.pendingBanner.hidden = pending === 0;
    el.pendingBanner.firstElementChild.textContent = pending === 1
      ? '1 device is waiting for approval' : `${pending} devices are waiting for approval`;
    renderDeviceFilter();
    paintTotals();
  }

  function isPending(device) {
    return device.status === 'pending' || (!device.approved && device.status !== 'rejected');
  }

  function buildDevice(device) {
    const node = el.tplDevice.content.firstElementChild.cloneNode(true);
    node.dataset.deviceId = device.id;
    node.querySelector('.approve').addEventListener('click', () => approve(node.dataset.deviceId, node));
    return node;
  }

  function paintDevice(node, device) {
    node.dataset.status = device.status;
    node.dataset.serial = device.serial_number || '';
    node.querySelector('.device-name').textContent = device.name;
    node.querySelector('.device-name').title = device.name;
    node.querySelector('.status-text').textContent = STATUS_LABELS[device.status] || device.status;
    node.querySelector('.device-kind').textContent = device.kind === 'pull' ? 'Pull' : 'Push';
    const sub = [];
    if (device.serial_number) sub.push(`SN ${device.serial_number}`);
    if (device.kind === 'pull' && device.host) sub.push(`${device.host}:${device.port}`);
    node.querySelector('.device-sub').textContent = sub.join(' · ');
    const seen = node.querySelector('.device-seen');
    seen.dataset.iso = device.last_seen || '';
    paintSeen(seen);
    node.querySelector('.device-today').textContent =
      (state.todayByDevice.get(device.id) || 0).toLocaleString();
    const button = node.querySelector('.approve');
    const pending = isPending(device);
    button.hidden = !pending;
    if (pending && !button.disabled) {
      button.setAttribute('aria-label', `Approve ${device.name}`);
    }
  }

  function paintSeen(node) {
    const iso = node.dataset.iso;
    if (!iso) { node.textContent = 'Never'; node.removeAttribute('datetime'); node.title = ''; return; }
    const when = new Date(iso);
    if (Number.isNaN(when.getTime())) { node.textContent = iso; return; }
    node.dateTime = iso;
    node.title = when.toLocaleString();
    const seconds = Math.max(0, (Date.now() - when.getTime()) / 1000);
    let text;
    if (seconds < 45) text = 'just now';
    else if (seconds < 3600) text = `${Math.round(seconds / 60)} min ago`;
    else if (seconds < 86400) text = `${Math.round(seconds / 3600)} h ago`;
    else if (seconds < 7 * 86400) text = `${Math.round(seconds / 86400)} d ago`;
    else text = when.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
    node.textContent = text;
  }

  async function approve(deviceId, node) {
    const button = node.querySelector('.approve');
    const label = button.querySelector('span');
    button.disabled = true;
    label.textContent = 'Approving…';
    try {
      const device = await api(`/api/devices/${encodeURIComponent(deviceId)}/approve`, { method: 'POST' });
      state.devices.set(device.id, device);
      toast(`Approved ${device.name}`);
      renderDevices();
      // The button disappears: move focus to the next pending device, if any.
      const next = el.devices.querySelector('.approve:not([hidden])');
      if (next && (document.activeElement === button || document.activeElement === document.body)) {
        next.focus();
      }
    } catch (err) {
      handleError(err, 'Approve failed');
    } finally {
      button.disabled = false;
      label.textContent = 'Approve';
    }
  }

  // ---------- filters ----------
  function renderDeviceFilter() {
    const select = el.filterDevice;
    const current = select.value;
    const options = [new Option('All devices', '')];
    for (const device of [...state.devices.values()].sort((a, b) => a.name.localeCompare(b.name))) {
      options.push(new Option(device.name, device.id));
    }
    const signature = options.map((o) => `${o.value}=${o.text}`).join('|');
    if (select.dataset.signature === signature) return;
    select.dataset.signature = signature;
    select.replaceChildren(...options);
    select.value = state.devices.has(current) ? current : '';
  }

  let userTimer = null;
  function applyFilters() {
    state.filter.device = el.filterDevice.value;
    state.filter.user = el.filterUser.value.trim();
    render();
    // Quiet devices and users may have older punches than the feed holds: fetch them.
    clearTimeout(userTimer);
    userTimer = setTimeout(() => {
      const query = new URLSearchParams({ limit: String(FEED_LIMIT) });
      if (state.filter.device) query.set('device_id', state.filter.device);
      if (/^[\w.-]+$/.test(state.filter.user)) query.set('user_id', state.filter.user);
      if (!query.has('device_id') && !query.has('user_id')) return;
      api(`/api/attendance?${query}`)
        .then((page) => addRows(page.items, false))
        .catch((err) => { if (err instanceof AuthError) showLogin(); });
    }, 300);
  }

  el.filterDevice.addEventListener('change', applyFilters);
  el.filterUser.addEventListener('input', applyFilters);
  el.filters.addEventListener('submit', (event) => event.preventDefault());
  el.filters.addEventListener('reset', () => setTimeout(applyFilters, 0));

  // ---------- clock, day change, relative times ----------
  function tick() {
    const now = new Date();
    el.clockTime.textContent = `${pad(now.getHours())}:${pad(now.getMinutes())}`;
    el.clockDate.textContent = now.toLocaleDateString(undefined, { weekday: 'short', day: 'numeric', month: 'short' });
    const today = localDate(now);
    if (today !== state.today) {
      state.today = today;
      resetToday();
      for (const row of state.rows) countRow(row);
      if (state.started) countToday();
      render();
    }
  }
  setInterval(tick, 1000);
  setInterval(() => el.devices.querySelectorAll('.device-seen').forEach(paintSeen), 20000);
  tick();

  // A hook for tests and debugging: what the page holds, without reaching into the DOM.
  window.zkMonitor = Object.freeze({
    snapshot: () => ({
      started: state.started,
      connection: el.conn.dataset.state,
      lastEventId: state.lastEventId,
      rows: state.rows.length,
      today: state.todayKeys.size,
    }),
  });

  start();
})();
