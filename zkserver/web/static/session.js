/* zkserver live monitor: sign-in, sign-out and start-up: from the login form to a running monitor.
 */

import { el, FEED_LIMIT, setConn, state, toast } from './state.js';
import { api, AuthError, login } from './api.js';
import { openStream, startWatchdog, stopStream } from './stream.js';
import { addRows, countToday, render, resetToday } from './feed.js';
import { setDevices } from './devices.js';
import { clearToday, loadToday } from './today.js';
import { loadAlerts } from './access.js';
import { loadPeople } from './people.js';

export function handleError(err, what) {
  if (err instanceof AuthError) {
    showLogin('Your session has ended. Please sign in again.');
    return;
  }
  console.warn(what, err);
  toast(`${what}: ${err.message}`, 'error');
}

export function showLogin(message) {
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

export async function start() {
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

export function resetData() {
  state.devices.clear();
  state.rows = [];
  state.byKey.clear();
  state.users.clear();
  state.lastEventId = null;
  resetToday();
  clearToday();
  el.feed.replaceChildren();
  el.devices.replaceChildren();
}

export async function boot() {
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
    loadAlerts();
    loadPeople(); // the People view (and the registry's names for the feed)
  } catch (err) {
    state.started = false;
    if (err instanceof AuthError) { showLogin(); return; }
    setConn('offline', '· retrying');
    setTimeout(boot, 3000);
    return;
  }
  openStream();
  countToday();
  loadToday();
  startWatchdog();
}

export function initSession() {
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
}
