/* zkserver live monitor.
 *
 * Plain browser JavaScript, no build step and no third-party code: ES modules loaded by
 * index.html (<script type="module">). Talks to the web listener only: /api/session
 * (login, HttpOnly cookie), /api/devices, /api/attendance, /api/stats, /devices/events
 * (Server-Sent Events, see README.md "The event stream").
 *
 *   state.js    vocabulary, the page's state and elements, small helpers
 *   api.js      JSON API calls
 *   session.js  sign-in, sign-out, start-up
 *   stream.js   the event stream and its reconnects
 *   feed.js     punches, names, today's totals, filters
 *   devices.js  the device list and approval
 *   times.js    punch times in the viewer's zone, days (pure)
 *   today.js    the Today view: who is in now, first and last punch per person
 *   access.js   door and alarm events in the feed, open device alerts
 *   people.js   the People view: the person registry and its sync state per terminal
 *   main.js     wiring: listeners, clock, the test hook, start
 */

import { el, localDate, pad, state } from './state.js';
import { initSession, start } from './session.js';
import { initStream } from './stream.js';
import { countRow, countToday, initFilters, render, resetToday } from './feed.js';
import { paintSeen } from './devices.js';
import { loadToday, today, todayKey, todaySnapshot } from './today.js';
import { initPeople } from './people.js';
import { fillRegistryNames } from './feed.js';

initSession();
initStream();
initFilters();
initPeople();
document.addEventListener('zk-person-names', fillRegistryNames);

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
  // The Today view's day turns at the server's --day-starts-at, in each device's zone.
  if (state.started && today.day && !today.loading && todayKey(now) !== today.key) {
    loadToday();
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
  todayView: () => todaySnapshot(),
});

start();
