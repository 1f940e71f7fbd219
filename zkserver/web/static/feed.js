/* zkserver live monitor: the live feed: punches in order, user names, today's totals, filters. */

import {
  ACTIONS,
  el,
  FEED_LIMIT,
  IN_ACTIONS,
  localDate,
  MAX_ROWS,
  METHODS,
  OUT_ACTIONS,
  nameListeners,
  rowKey,
  saveZone,
  setIcon,
  state,
  TODAY_PAGES,
} from './state.js';
import { lookupPerson, personName } from './people.js';
import { api, AuthError } from './api.js';
import { showLogin } from './session.js';
import { browserZone, instantKey, shownTime, validZone } from './times.js';
import { renderToday } from './today.js';

export function compareRows(a, b) {
  // Newest first by instant (devices in different zones interleave correctly).
  const ka = instantKey(a);
  const kb = instantKey(b);
  if (ka !== kb) return ka < kb ? 1 : -1;
  return b.seq - a.seq;
}

export function insertIndex(row) {
  let lo = 0;
  let hi = state.rows.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareRows(state.rows[mid], row) < 0) lo = mid + 1; else hi = mid;
  }
  return lo;
}

export function addRows(items, fresh) {
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
      if (item.timestamp_utc && !existing.timestamp_utc) existing.timestamp_utc = item.timestamp_utc;
      continue;
    }
    const row = {
      key,
      device_id: item.device_id,
      device_name: item.device_name,
      serial_number: item.serial_number,
      user_id: String(item.user_id),
      user_name: item.user_name || cachedName(item.device_id, String(item.user_id))
        || personName(String(item.user_id)) || '',
      timestamp: item.timestamp,
      timestamp_utc: item.timestamp_utc || null,
      time_ambiguous: Boolean(item.time_ambiguous),
      suspect_time: item.suspect_time || null,
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

export function matches(row) {
  const { device, user, kind } = state.filter;
  if (kind === 'access' && !row.kind) return false; // door and alarm events only
  if (kind === 'punches' && row.kind) return false;
  if (device && row.device_id !== device) return false;
  if (user) {
    const needle = user.toLowerCase();
    if (!row.user_id.toLowerCase().includes(needle)
        && !(row.user_name || '').toLowerCase().includes(needle)) return false;
  }
  return true;
}

export function placeRow(row, index) {
  const node = row.node || buildRow(row);
  let before = null;
  for (let i = index + 1; i < state.rows.length; i += 1) {
    const next = state.rows[i];
    if (next.node && next.node.parentNode === el.feed) { before = next.node; break; }
  }
  el.feed.insertBefore(node, before);
}

export function dayLabel(date) {
  if (date === state.today) return 'Today';
  const [y, m, d] = date.split('-').map(Number);
  const day = new Date(y, m - 1, d);
  const yesterday = new Date();
  yesterday.setDate(yesterday.getDate() - 1);
  if (localDate(yesterday) === date) return 'Yesterday';
  if (Number.isNaN(day.getTime())) return date;
  return day.toLocaleDateString(undefined, { day: 'numeric', month: 'short', year: 'numeric' });
}

export function buildRow(row) {
  const node = el.tplPunch.content.firstElementChild.cloneNode(true);
  const shown = shownTime(row, state.zone);
  const [date = '', time = ''] = String(shown).split(' ');
  node.dataset.key = row.key;
  node.dataset.serial = row.serial_number || '';
  node.dataset.deviceId = row.device_id || '';
  node.dataset.user = row.user_id;
  node.dataset.timestamp = row.timestamp;
  node.dataset.shown = shown;
  const timeEl = node.querySelector('.punch-time');
  timeEl.dateTime = row.timestamp_utc || String(row.timestamp).replace(' ', 'T');
  timeEl.querySelector('.hms').textContent = time || shown;
  timeEl.querySelector('.day').textContent = date ? dayLabel(date) : '';
  const about = [`Device time ${row.timestamp}`];
  if (row.timestamp_utc) about.push(`UTC ${row.timestamp_utc.replace('T', ' ').replace('Z', '')}`);
  if (row.time_ambiguous) about.push('daylight-saving change: read as the earlier time');
  if (row.suspect_time) {
    node.classList.add('is-suspect');
    const badge = timeEl.querySelector('.suspect');
    badge.hidden = false;
    badge.title = `Suspect time: ${row.suspect_time}`;
    about.push(`suspect time: ${row.suspect_time}`);
  }
  if (row.time_ambiguous) node.classList.add('is-ambiguous');
  timeEl.title = about.join(' · ');

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

export function paintName(row) {
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

export function render() {
  const nodes = [];
  for (const row of state.rows) {
    if (matches(row)) nodes.push(row.node || buildRow(row));
  }
  el.feed.replaceChildren(...nodes);
  updateFeedMeta();
}

export function updateFeedMeta() {
  const shown = el.feed.childElementCount;
  const filtered = Boolean(state.filter.device || state.filter.user || state.filter.kind);
  el.feedEmpty.hidden = shown > 0;
  el.feedEmpty.textContent = filtered
    ? 'No punches match these filters.'
    : 'No punches yet. They appear here the moment a terminal sends one.';
  el.feedCount.textContent = filtered
    ? `${shown} of ${state.rows.length} shown`
    : shown ? `${shown} most recent` : '';
}

export function cachedName(deviceId, userId) {
  const entry = state.users.get(deviceId);
  return entry && entry.names ? entry.names.get(userId) || '' : '';
}

export function resolveNames(deviceId) {
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
        const name = cachedName(deviceId, row.user_id) || personName(row.user_id);
        if (name) { row.user_name = name; paintName(row); }
        else lookupPerson(row.user_id);
      }
    }
    for (const listener of nameListeners) listener(deviceId);
  };
  if (entry.promise) entry.promise.then(fill); else fill();
}

export function resetToday() {
  state.todayKeys.clear();
  state.todayIn = 0;
  state.todayOut = 0;
  state.todayByDevice.clear();
  paintTotals();
}

export function countRow(row) {
  if (!String(row.timestamp).startsWith(state.today) || state.todayKeys.has(row.key)) return;
  state.todayKeys.add(row.key);
  if (IN_ACTIONS.has(row.action)) state.todayIn += 1;
  else if (OUT_ACTIONS.has(row.action)) state.todayOut += 1;
  state.todayByDevice.set(row.device_id, (state.todayByDevice.get(row.device_id) || 0) + 1);
  scheduleTotals();
}

let totalsPending = false;

export function scheduleTotals() {
  if (totalsPending) return;
  totalsPending = true;
  setTimeout(() => { totalsPending = false; paintTotals(); }, 0);
}

export function paintTotals() {
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

export async function countToday() {
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

export function renderDeviceFilter() {
  renderZoneOptions();
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

export function applyFilters() {
  state.filter.device = el.filterDevice.value;
  state.filter.user = el.filterUser.value.trim();
  state.filter.kind = el.filterKind ? el.filterKind.value : '';
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

function allZones() {
  try { return Intl.supportedValuesOf('timeZone'); } catch (_) { return []; }
}

/** The zones a viewer can pick: each device's own time, UTC, this browser's, the devices'. */
export function renderZoneOptions() {
  const select = el.filterZone;
  const zones = new Set(['UTC', browserZone()]);
  for (const device of state.devices.values()) {
    if (validZone(device.timezone)) zones.add(device.timezone);
  }
  if (state.zone) zones.add(state.zone);
  const options = [new Option("Each device's own time", '')];
  for (const zone of [...zones].sort()) {
    const label = zone === browserZone() ? `${zone} (this browser)` : zone;
    options.push(new Option(label, zone));
  }
  const signature = options.map((o) => `${o.value}=${o.text}`).join('|');
  if (select.dataset.signature !== signature) {
    select.dataset.signature = signature;
    const all = document.createElement('optgroup');
    all.label = 'All zones';
    for (const zone of allZones()) if (!zones.has(zone)) all.append(new Option(zone, zone));
    select.replaceChildren(...options, all);
  }
  select.value = state.zone;
}

export function applyZone() {
  const zone = el.filterZone.value;
  saveZone(validZone(zone) ? zone : '');
  for (const row of state.rows) row.node = null;
  render();
  renderToday();
}

export function initFilters() {
  el.filterDevice.addEventListener('change', applyFilters);

  el.filterZone.addEventListener('change', applyZone);

  el.filterUser.addEventListener('input', applyFilters);

  if (el.filterKind) el.filterKind.addEventListener('change', applyFilters);

  el.filters.addEventListener('submit', (event) => event.preventDefault());

  el.filters.addEventListener('reset', () => setTimeout(() => { applyFilters(); applyZone(); }, 0));
}

// The registry's names (People view) for punches whose terminal sends none.
export function fillRegistryNames() {
  for (const row of state.rows) {
    if (!row.user_name) {
      const name = personName(row.user_id);
      if (name) { row.user_name = name; paintName(row); }
    }
  }
}
