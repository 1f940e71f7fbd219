/* zkserver live monitor: door and alarm events in the feed, open device alerts. */

import { el, state } from './state.js';
import { api, AuthError } from './api.js';
import { showLogin } from './session.js';
import { dayLabel, insertIndex, matches, placeRow, updateFeedMeta } from './feed.js';

const DOOR_WORDS = {
  opened: 'opened', closed: 'closed', forced_open: 'forced open', held_open: 'held open',
  remote_open: 'opened remotely', remote_close: 'closed remotely', exit_button: 'exit button',
  verified_open: 'opened (verified)', denied: 'access denied', unlocked: 'unlocked',
  first_person_open: 'opened (first person)', multi_person_open: 'opened (multi-person)',
  emergency_password_open: 'opened (emergency password)', passage_mode_open: 'passage mode',
  passage_mode_over: 'passage mode over', remote_normal_open: 'normally open (remote)',
  superuser_open: 'opened (superuser)',
};

const ALERT_WORDS = {
  silent: 'Silent', storage: 'Log storage nearly full', users: 'User storage nearly full',
  clock: 'Clock off',
};

export const ACCESS_TYPES = new Set(['door', 'alarm']);

/** A door or alarm event from the stream: one row of the feed, styled apart. */
export function addAccessEvent(event, id, fresh) {
  const key = `event-${id}`;
  if (state.byKey.has(key)) return;
  const row = {
    key,
    kind: event.type,
    device_id: event.device_id,
    device_name: event.device_name,
    serial_number: event.serial_number,
    user_id: event.user_id ? String(event.user_id) : '',
    user_name: '',
    timestamp: event.timestamp || '',
    event,
    seq: ++state.seq,
    fresh,
    node: null,
  };
  row.node = buildAccessRow(row);
  state.byKey.set(key, row);
  const index = insertIndex(row);
  state.rows.splice(index, 0, row);
  if (matches(row)) placeRow(row, index);
  updateFeedMeta();
}

export function describe(event) {
  if (event.type === 'alarm') {
    const what = String(event.alarm || 'alarm').replace(/_/g, ' ');
    return `Alarm: ${what}${event.state ? ` (${event.state})` : ''}`;
  }
  const door = event.door ? `Door ${event.door}` : 'Door';
  const word = DOOR_WORDS[event.event] || String(event.event || 'event').replace(/_/g, ' ');
  const reason = event.reason ? ` (${String(event.reason).replace(/_/g, ' ')})` : '';
  return `${door} ${word}${reason}`;
}

function buildAccessRow(row) {
  const node = document.createElement('li');
  node.className = 'punch access-event';
  node.dataset.kind = row.kind;
  node.dataset.key = row.key;
  node.dataset.deviceId = row.device_id || '';
  node.dataset.serial = row.serial_number || '';
  const [date = '', time = ''] = String(row.timestamp).split(' ');
  const when = document.createElement('time');
  when.className = 'punch-time';
  when.dateTime = String(row.timestamp).replace(' ', 'T');
  when.innerHTML = '<span class="hms"></span><span class="day"></span>';
  when.querySelector('.hms').textContent = time || row.timestamp;
  when.querySelector('.day').textContent = date ? dayLabel(date) : '';
  const badge = document.createElement('span');
  badge.className = 'access-badge';
  badge.textContent = row.kind === 'alarm' ? 'Alarm' : 'Door';
  const what = document.createElement('span');
  what.className = 'access-text';
  what.textContent = describe(row.event);
  const who = document.createElement('span');
  who.className = 'uid';
  who.textContent = row.user_id ? `User ${row.user_id}` : '';
  const where = document.createElement('span');
  where.className = 'where';
  where.textContent = row.device_name || row.serial_number || '';
  node.append(when, badge, what, who, where);
  if (row.fresh) {
    node.classList.add('is-new');
    node.addEventListener('animationend', () => node.classList.remove('is-new'), { once: true });
  }
  return node;
}

// --- open alerts in the device panel ---------------------------------------------------------

export function deviceAlert(event) {
  const list = state.alerts.get(event.device_id) || new Map();
  if (event.state === 'recovered') list.delete(event.alert);
  else list.set(event.alert, event.detail || '');
  state.alerts.set(event.device_id, list);
  paintAlerts();
}

export async function loadAlerts() {
  try {
    const rows = await api('/api/alerts');
    state.alerts.clear();
    for (const row of rows) {
      const list = state.alerts.get(row.device_id) || new Map();
      list.set(row.alert, row.detail || '');
      state.alerts.set(row.device_id, list);
    }
    paintAlerts();
  } catch (err) {
    if (err instanceof AuthError) showLogin();
  }
}

export function paintAlerts() {
  for (const node of el.devices.children) {
    let box = node.querySelector('.device-alerts');
    const open = state.alerts.get(node.dataset.deviceId);
    if (!open || open.size === 0) {
      if (box) box.remove();
      node.removeAttribute('data-alert');
      continue;
    }
    if (!box) {
      box = document.createElement('ul');
      box.className = 'device-alerts';
      box.setAttribute('aria-label', 'Open alerts');
      node.querySelector('.device-facts').after(box);
    }
    node.dataset.alert = 'open';
    box.replaceChildren(...[...open].map(([alert, detail]) => {
      const item = document.createElement('li');
      item.className = 'device-alert';
      item.dataset.alert = alert;
      item.textContent = `${ALERT_WORDS[alert] || alert}: ${detail}`;
      return item;
    }));
  }
}
