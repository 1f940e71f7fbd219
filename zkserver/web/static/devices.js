/* zkserver live monitor: the device list: status, last seen, today's count, approval. */

import { el, state, STATUS_LABELS, toast } from './state.js';
import { api, AuthError } from './api.js';
import { handleError, showLogin } from './session.js';
import { paintTotals, renderDeviceFilter } from './feed.js';
import { buildControl, paintControl } from './commands.js';
import { paintAlerts } from './access.js';

export function setDevices(list) {
  const seen = new Set();
  for (const device of list) {
    seen.add(device.id);
    state.devices.set(device.id, device);
  }
  for (const id of [...state.devices.keys()]) if (!seen.has(id)) state.devices.delete(id);
  renderDevices();
}

let refetching = null;

export function refreshDevices() {
  if (!refetching) {
    refetching = api('/api/devices')
      .then(setDevices)
      .catch((err) => { if (err instanceof AuthError) showLogin(); })
      .finally(() => { refetching = null; });
  }
  return refetching;
}

export function deviceStatus(event) {
  const device = state.devices.get(event.device_id);
  if (!device) { refreshDevices(); return; }
  device.status = event.status;
  if ('status_detail' in event) device.status_detail = event.status_detail;
  if (event.last_seen) device.last_seen = event.last_seen;
  if (event.device_name) device.name = event.device_name;
  if (event.status === 'online') device.approved = true;
  if (event.status === 'rejected') device.approved = false;
  renderDevices();
}

export function sortedDevices() {
  const rank = { pending: 0, auth_failed: 1, online: 2, rebooting: 2, offline: 3, rejected: 4 };
  return [...state.devices.values()].sort((a, b) =>
    (rank[a.status] ?? 3) - (rank[b.status] ?? 3) || a.name.localeCompare(b.name));
}

export function renderDevices() {
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
  paintAlerts();
}

export function isPending(device) {
  return device.status === 'pending' || (!device.approved && device.status !== 'rejected');
}

export function buildDevice(device) {
  const node = el.tplDevice.content.firstElementChild.cloneNode(true);
  node.dataset.deviceId = device.id;
  node.querySelector('.approve').addEventListener('click', () => approve(node.dataset.deviceId, node));
  buildControl(node);
  return node;
}

export function paintDevice(node, device) {
  node.dataset.status = device.status;
  node.dataset.serial = device.serial_number || '';
  node.querySelector('.device-name').textContent = device.name;
  node.querySelector('.device-name').title = device.name;
  node.querySelector('.status-text').textContent = STATUS_LABELS[device.status] || device.status;
  // Why the device is not (fully) working: 'connection refused', 'wrong comm key', ...
  const detail = node.querySelector('.device-detail');
  detail.textContent = device.status_detail || '';
  detail.hidden = !device.status_detail;
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
  paintControl(node, device);
  const button = node.querySelector('.approve');
  const pending = isPending(device);
  button.hidden = !pending;
  if (pending && !button.disabled) {
    button.setAttribute('aria-label', `Approve ${device.name}`);
  }
}

export function paintSeen(node) {
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

export async function approve(deviceId, node) {
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
