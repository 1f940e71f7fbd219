/* zkserver live monitor: the Today view. Who is in now, who has punched today, and each
 * person's first and last punch; loaded from /api/days, then kept up to date from the stream.
 *
 * A person is "in" when their last punch today has an in state (0 in, 3 back from break,
 * 4 overtime in), "out" after an out state (1, 2, 5); for terminals that send no state (255)
 * an odd number of punches today counts as in.
 */

import { el, IN_ACTIONS, nameListeners, OUT_ACTIONS, state } from './state.js';
import { api, AuthError } from './api.js';
import { showLogin } from './session.js';
import { cachedName, resolveNames } from './feed.js';
import { dayOf, instantKey, localNowIn, parseDayStart, shownTime, todayOf } from './times.js';

export const today = {
  day: '',               // the viewer's today (the heading)
  key: '',               // todayKey() when loaded
  dayStart: 0,          // minutes (the server's --day-starts-at)
  defaultZone: '',      // the zone of devices without their own (--timezone, else the server's)
  people: new Map(),    // user id -> person
  loading: null,
  pending: [],          // live punches that arrived while loading
};

function person(userId) {
  let p = today.people.get(userId);
  if (!p) {
    p = {
      user_id: userId, name: '', punches: 0, devices: new Set(),
      first: null, last: null,   // {timestamp, timestamp_utc, action}
    };
    today.people.set(userId, p);
  }
  return p;
}

/** Today for a device: its own local date (a punch's day is its device-local date), so a
 * site in a zone ahead of or behind the viewer shows its own today. A device without a zone
 * takes the server's default zone (/api/days tells it); the viewer's date when the browser
 * cannot read either. */
export function deviceToday(deviceId, now = new Date()) {
  const device = state.devices.get(deviceId);
  const local = device
    ? localNowIn(device.timezone, now) || localNowIn(today.defaultZone, now)
    : null;
  return local ? dayOf(local, today.dayStart) : todayOf(now, today.dayStart);
}

/** Every device's today, in one string (the Today view reloads when it changes). */
export function todayKey(now = new Date()) {
  const days = [todayOf(now, today.dayStart)];
  for (const id of [...state.devices.keys()].sort()) days.push(deviceToday(id, now));
  return days.join(' ');
}

export function isIn(p) {
  if (!p.last) return false;
  if (IN_ACTIONS.has(p.last.action)) return true;
  if (OUT_ACTIONS.has(p.last.action)) return false;
  return p.punches % 2 === 1;
}

/** Load today's rows from the server (again). */
export function loadToday() {
  const run = async () => {
    // The first answer tells the server's day start; ask again if that moves the day.
    // Devices in other zones may be a day ahead or behind: read the days around the
    // viewer's and keep each row that is its devices' today.
    const ask = async () => {
      const now = new Date();
      const days = todayKey(now).split(' ').sort();
      const from = days[0];
      const to = days[days.length - 1];
      const answer = await api(`/api/days?from=${from}&to=${to}`);
      return { answer, now, key: todayKey(now) };
    };
    let { answer: result, now, key } = await ask();
    const zone = result.default_timezone || '';
    if (parseDayStart(result.day_starts_at) !== today.dayStart || zone !== today.defaultZone) {
      today.dayStart = parseDayStart(result.day_starts_at);
      today.defaultZone = zone;
      ({ answer: result, now, key } = await ask());
    }
    today.day = todayOf(now, today.dayStart);
    today.key = key;
    today.people.clear();
    for (const row of result.items) {
      if (!row.devices.some((d) => deviceToday(d, now) === row.date)) continue;
      const p = person(String(row.user_id));
      p.name = row.name || '';
      p.punches = row.punches;
      row.devices.forEach((d) => p.devices.add(d));
      p.first = { timestamp: row.first, timestamp_utc: row.first_utc, action: row.first_action };
      p.last = { timestamp: row.last, timestamp_utc: row.last_utc, action: row.last_action };
    }
    const pending = today.pending;
    today.pending = [];
    for (const event of pending) applyPunch(event);
    fillTodayNames();
    renderToday();
  };
  today.loading = run().catch((err) => {
    if (err instanceof AuthError) showLogin();
  }).finally(() => { today.loading = null; });
  return today.loading;
}

/** A live attendance event (or a fetched row): count it if it is today's. */
export function todayPunch(event) {
  if (today.loading) { today.pending.push(event); return; }
  applyPunch(event);
}

function applyPunch(event) {
  if (!today.day || dayOf(event.timestamp, today.dayStart) !== deviceToday(event.device_id)) return;
  const p = person(String(event.user_id));
  const punch = { timestamp: event.timestamp, timestamp_utc: event.timestamp_utc, action: event.action };
  const key = instantKey(punch);
  // The same punch again (a replay, or one the day rows already counted): nothing to add.
  if ((p.first && instantKey(p.first) === key) || (p.last && instantKey(p.last) === key)) return;
  p.punches += 1;
  if (event.device_id) p.devices.add(event.device_id);
  if (!p.first || key < instantKey(p.first)) p.first = punch;
  if (!p.last || key >= instantKey(p.last)) p.last = punch;
  if (!p.name) {
    p.name = cachedName(event.device_id, p.user_id);
    if (!p.name) resolveNames(event.device_id);
  }
  scheduleToday();
}

export function clearToday() {
  today.day = '';
  today.people.clear();
  renderToday();
}

/** Names learnt later (device users) fill in. */
export function fillTodayNames() {
  let changed = false;
  for (const p of today.people.values()) {
    if (p.name) continue;
    for (const deviceId of p.devices) {
      const name = cachedName(deviceId, p.user_id);
      if (name) { p.name = name; changed = true; break; }
    }
  }
  if (changed) scheduleToday();
}

let pending = false;

export function scheduleToday() {
  if (pending) return;
  pending = true;
  setTimeout(() => { pending = false; renderToday(); }, 0);
}

function clock(punch) {
  if (!punch) return '';
  const text = shownTime(punch, state.zone);
  const [date, time] = text.split(' ');
  return date === today.day || !time ? (time || text) : `${time} (${date.slice(5)})`;
}

export function renderToday() {
  if (!el.todayList) return;
  const people = [...today.people.values()];
  const inNow = people.filter(isIn);
  people.sort((a, b) => (isIn(b) - isIn(a))
    || instantKey(a.first || {}).localeCompare(instantKey(b.first || {}))
    || a.user_id.localeCompare(b.user_id, undefined, { numeric: true }));
  el.todayIn.textContent = inNow.length.toLocaleString();
  el.todayPunched.textContent = people.length.toLocaleString();
  el.todayDay.textContent = today.day;
  el.todayDay.dateTime = today.day;
  const rows = people.map((p) => {
    const tr = el.tplToday.content.firstElementChild.cloneNode(true);
    tr.dataset.user = p.user_id;
    tr.dataset.in = isIn(p) ? 'true' : 'false';
    tr.querySelector('.today-name').textContent = p.name || `User ${p.user_id}`;
    tr.querySelector('.today-uid').textContent = p.user_id;
    tr.querySelector('.today-first').textContent = clock(p.first);
    tr.querySelector('.today-last').textContent = clock(p.last);
    tr.querySelector('.today-count').textContent = String(p.punches);
    const now = tr.querySelector('.today-now');
    now.textContent = isIn(p) ? 'In' : 'Out';
    now.dataset.kind = isIn(p) ? 'in' : 'out';
    return tr;
  });
  el.todayList.replaceChildren(...rows);
  el.todayEmpty.hidden = people.length > 0;
}

/** What the Today view holds (for the test hook). */
export function todaySnapshot() {
  return {
    day: today.day,
    in_now: [...today.people.values()].filter(isIn).map((p) => p.user_id).sort(),
    punched: [...today.people.keys()].sort(),
    people: Object.fromEntries([...today.people.values()].map((p) => [p.user_id, {
      name: p.name, punches: p.punches,
      first: p.first && p.first.timestamp, last: p.last && p.last.timestamp,
    }])),
  };
}

nameListeners.push(fillTodayNames);
