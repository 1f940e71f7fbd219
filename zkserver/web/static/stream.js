/* zkserver live monitor: the event stream (/devices/events): open, reconnect with ?last_event_id=,
 * watchdog.
 */

import {
  BACKOFF_MAX,
  BACKOFF_MIN,
  FEED_LIMIT,
  setConn,
  state,
  WATCHDOG_MS,
} from './state.js';
import { personSync } from './people.js';
import { api, AuthError } from './api.js';
import { showLogin } from './session.js';
import { addRows, resolveNames } from './feed.js';
import { deviceStatus, setDevices } from './devices.js';
import { commandStatus } from './commands.js';
import { loadToday, todayPunch } from './today.js';
import { addAccessEvent, deviceAlert } from './access.js';

export function streamUrl() {
  return state.lastEventId !== null
    ? `/devices/events?last_event_id=${encodeURIComponent(state.lastEventId)}`
    : '/devices/events';
}

export function openStream() {
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

export function stopStream() {
  if (state.source) {
    state.source.onopen = state.source.onmessage = state.source.onerror = null;
    state.source.close();
    state.source = null;
  }
  clearTimeout(state.reconnectTimer);
  state.reconnectTimer = null;
}

export async function scheduleReconnect() {
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

export function startWatchdog() {
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

export async function catchUp() {
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

export function handleEvent(event, id) {
  switch (event.type) {
    case 'attendance':
      addRows([event], true);
      todayPunch(event);
      break;
    case 'device_status':
      deviceStatus(event);
      break;
    case 'user_sync':
      if (event.operation === 'upsert' || event.operation === 'delete') {
        personSync(event); // a registry person's state on a device (People view)
        break;
      }
      state.users.delete(event.device_id);
      resolveNames(event.device_id);
      break;
    case 'command_status':
      commandStatus(event, id > state.bootEventId);
      break;
    case 'command_result':
      break; // an alias of a final command_status (kept for older dashboards)
    case 'door':
    case 'alarm':
      addAccessEvent(event, id, id > state.bootEventId);
      break;
    case 'device_alert':
      deviceAlert(event);
      break;
    default:
      break; // clients ignore unknown types
  }
}

export function initStream() {
  window.addEventListener('online', () => {
    if (state.started && !state.source) { state.attempts = 0; openStream(); }
  });

  window.addEventListener('offline', () => { if (state.started) setConn('offline', '· no network'); });
}
