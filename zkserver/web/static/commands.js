/* zkserver live monitor: device control: the common commands of a device (reboot, sync time,
 * open door, clear log after a confirmation) and its recent commands, kept live from the
 * stream's command_status events (POST /api/devices/{id}/commands, GET .../commands).
 */

import { el, state, toast } from './state.js';
import { api } from './api.js';
import { handleError } from './session.js';

export const COMMAND_LABELS = {
  reboot: 'Reboot', sync_time: 'Sync time', info: 'Info', check: 'Check',
  clear_log: 'Clear log', clear_data: 'Clear all data', set_option: 'Set option',
  open_door: 'Open door', user_upsert: 'Write user', user_delete: 'Delete user',
  query_users: 'Read users', query_attlog: 'Read log', enroll_finger: 'Enrol finger',
  template_upsert: 'Write template', raw: 'Command',
};

const STATUS_RANK = { queued: 0, sent: 1, done: 2, failed: 2, expired: 2, cancelled: 2 };
const RECENT = 5;
const recent = new Map(); // device id -> commands, newest first ({id, type, status, result, ...})

export function commandLabel(type) {
  return COMMAND_LABELS[type] || type;
}

export function buildControl(node) {
  const control = node.querySelector('.device-control');
  control.addEventListener('toggle', () => {
    if (control.open) loadRecent(node.dataset.deviceId);
  });
  for (const button of control.querySelectorAll('button[data-command]')) {
    button.addEventListener('click', () => send(node, button, button.dataset.command));
  }
  const clear = control.querySelector('.clear-log');
  const ask = control.querySelector('.confirm');
  clear.addEventListener('click', () => {
    ask.hidden = false;
    clear.setAttribute('aria-expanded', 'true');
    ask.querySelector('.confirm-yes').focus();
  });
  ask.querySelector('.confirm-no').addEventListener('click', () => {
    ask.hidden = true;
    clear.setAttribute('aria-expanded', 'false');
    clear.focus();
  });
  ask.querySelector('.confirm-yes').addEventListener('click', async (event) => {
    ask.hidden = true;
    clear.setAttribute('aria-expanded', 'false');
    await send(node, event.currentTarget, 'clear_log', { confirm: true });
    clear.focus();
  });
}

export function paintControl(node, device) {
  const control = node.querySelector('.device-control');
  control.hidden = !device.approved || device.status === 'pending' || device.status === 'rejected';
  const name = device.name || device.serial_number || 'device';
  control.querySelector('summary').setAttribute('aria-label', `Control ${name}`);
  control.querySelector('.confirm-text').textContent =
    `Erase every punch stored on ${name}? The server keeps the ones it already has.`;
  paintRecent(node, device.id);
}

async function send(node, button, type, fields = {}) {
  const deviceId = node.dataset.deviceId;
  button.disabled = true;
  try {
    const command = await api(`/api/devices/${encodeURIComponent(deviceId)}/commands`, {
      method: 'POST', json: { type, ...fields },
    });
    remember(command);
  } catch (err) {
    handleError(err, `${commandLabel(type)} failed`);
  } finally {
    button.disabled = false;
  }
}

async function loadRecent(deviceId) {
  try {
    const list = await api(`/api/devices/${encodeURIComponent(deviceId)}/commands?limit=${RECENT}`);
    // Events may have arrived while this was loading: never go back to an earlier status.
    const known = new Map((recent.get(deviceId) || []).map((c) => [c.id, c]));
    for (const command of list) {
      const seen = known.get(command.id);
      if (!seen || (STATUS_RANK[command.status] ?? 0) >= (STATUS_RANK[seen.status] ?? 0)) {
        known.set(command.id, command);
      }
    }
    store(deviceId, [...known.values()]);
  } catch (err) {
    handleError(err, 'Could not load the commands');
  }
}

function remember(command) {
  const list = (recent.get(command.device_id) || []).filter((c) => c.id !== command.id);
  store(command.device_id, [command, ...list]);
}

function store(deviceId, list) {
  list.sort((a, b) => Number(b.id) - Number(a.id));
  recent.set(deviceId, list.slice(0, RECENT));
  const node = el.devices.querySelector(`li[data-device-id="${CSS.escape(deviceId)}"]`);
  if (node) paintRecent(node, deviceId);
}

const FINAL = new Set(['done', 'failed', 'expired']);

/* One command_status event; ``fresh``: it happened after the page loaded (toast the outcome). */
export function commandStatus(event, fresh = false) {
  const list = recent.get(event.device_id) || [];
  const found = list.find((c) => c.id === event.command_id);
  const update = {
    id: event.command_id, device_id: event.device_id, type: event.command_type,
    status: event.status, return_code: event.return_code, result: event.result,
    attempts: event.attempts,
  };
  remember(found ? { ...found, ...update } : update);
  if (fresh && FINAL.has(event.status)) {
    const device = state.devices.get(event.device_id);
    const name = device ? device.name : event.serial_number;
    const words = event.result ? `: ${event.result.split('\n')[0]}` : '';
    const ok = event.status === 'done';
    toast(`${name}: ${commandLabel(event.command_type)} ${event.status}${ok ? '' : words}`,
      ok ? 'info' : 'error');
  }
}

function paintRecent(node, deviceId) {
  const listNode = node.querySelector('.device-commands');
  const list = recent.get(deviceId) || [];
  listNode.replaceChildren(...list.map((command) => {
    const item = document.createElement('li');
    item.className = 'command';
    item.dataset.commandId = command.id;
    item.dataset.type = command.type;
    item.dataset.status = command.status;
    const what = document.createElement('span');
    what.className = 'command-type';
    what.textContent = commandLabel(command.type);
    const status = document.createElement('span');
    status.className = 'command-status';
    status.textContent = command.status;
    item.append(what, status);
    if (command.result && command.status !== 'done') {
      const result = document.createElement('span');
      result.className = 'command-result';
      result.textContent = command.result.split('\n')[0];
      item.append(result);
    }
    return item;
  }));
  node.querySelector('.device-commands-empty').hidden = list.length > 0;
}
