/* zkserver live monitor: vocabulary, limits, the page's state, its DOM elements and small UI
 * helpers.
 */

// action: the terminal's in/out state.  [label, kind (colour), icon]
export const ACTIONS = {
  0: ['In', 'in', 'i-in'],
  1: ['Out', 'out', 'i-out'],
  2: ['Break out', 'break', 'i-break'],
  3: ['Break in', 'break', 'i-break'],
  4: ['OT in', 'ot', 'i-ot'],
  5: ['OT out', 'ot', 'i-ot'],
  255: ['—', 'none', 'i-none'],
};

export const IN_ACTIONS = new Set([0, 3, 4]);

export const OUT_ACTIONS = new Set([1, 2, 5]);

// method: the verify method (push verify codes).  [label, icon]
export const METHODS = {
  0: ['Password/any', 'i-keypad'],
  1: ['Fingerprint', 'i-fingerprint'],
  2: ['Card', 'i-card'],
  3: ['Password', 'i-password'],
  4: ['Card', 'i-card'],
  15: ['Face', 'i-face'],
  25: ['Palm', 'i-palm'],
  200: ['Other', 'i-other'],
};

export const STATUS_LABELS = {
  online: 'Online', offline: 'Offline', pending: 'Pending',
  auth_failed: 'Auth failed', rejected: 'Rejected', rebooting: 'Rebooting',
};

export const CONN_LABELS = {
  connecting: 'Connecting…', live: 'Live', reconnecting: 'Reconnecting…', offline: 'Offline',
  signedout: 'Signed out',
};

export const FEED_LIMIT = 100;        // rows fetched for the initial feed

export const MAX_ROWS = 1000;         // rows kept in the page

export const TODAY_PAGES = 50;        // x 1000 rows read to count today's punches

export const BACKOFF_MIN = 500;

export const BACKOFF_MAX = 15000;

export const WATCHDOG_MS = 30000;     // compare with /api/stats to catch a silently dead stream

export const state = {
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
  filter: { device: '', user: '', kind: '' },
  zone: readZone(),            // '' = each device's own time, else an IANA zone name
  alerts: new Map(),           // device id -> Map(alert -> detail): open device alerts
};

function readZone() {
  try { return localStorage.getItem('zk-zone') || ''; } catch (_) { return ''; }
}

// Called with a device id when the names of its users become known.
export const nameListeners = [];

export function saveZone(zone) {
  state.zone = zone;
  try { localStorage.setItem('zk-zone', zone); } catch (_) { /* private mode */ }
}

const $ = (id) => document.getElementById(id);

export const el = {
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
  filterZone: $('filter-zone'),
  todayList: $('today-list'), todayIn: $('today-in'), todayPunched: $('today-punched'),
  todayDay: $('today-day'), todayEmpty: $('today-empty'), tplToday: $('tpl-today'),
  filterKind: $('filter-kind'),
  pendingBanner: $('pending-banner'),
  devices: $('devices'), devicesEmpty: $('devices-empty'), devicesCount: $('devices-count'),
  toasts: $('toasts'),
  tplPunch: $('tpl-punch'), tplDevice: $('tpl-device'),
};

export function pad(n) { return String(n).padStart(2, '0'); }

export function localDate(d) { return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())}`; }

export function rowKey(r) {
  return `${r.serial_number || r.device_id || ''}\u0000${r.user_id}\u0000${r.timestamp}`;
}

export function setIcon(svg, id) { svg.querySelector('use').setAttribute('href', '#' + id); }

export function toast(text, kind = 'info', ms = 5000) {
  const node = document.createElement('div');
  node.className = 'toast';
  node.dataset.kind = kind;
  node.textContent = text;
  el.toasts.append(node);
  setTimeout(() => node.remove(), ms);
}

export function setConn(name, detail) {
  el.conn.dataset.state = name;
  el.connText.textContent = detail ? `${CONN_LABELS[name]} ${detail}` : CONN_LABELS[name];
}
